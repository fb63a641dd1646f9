"""Values: VAS (value-guided sampling) speed."""
