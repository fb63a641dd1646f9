"""Quality: accuracy of selection strategies vs N, and strategies side by side."""
