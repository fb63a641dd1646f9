"""The sympy half of :mod:`winnow.answers.final`: runs only inside answer worker processes.

The parent (:mod:`winnow.answers.final`) has already tokenised the answer against its whitelist,
read
it with :mod:`winnow.answers.expr`'s grammar and bounded every magnitude, so what arrives here is
small. It still runs in a worker process (:mod:`winnow.answers.sandbox`) under a hard deadline:
sympy is
not ours, and a deadline that kills a process works where a signal or a thread cannot.

Arguments and results are JSON values (strings, numbers, booleans, lists, null).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

# Where two expressions with variables are compared: irrational-looking, positive (log and sqrt
# stay real), distinct per variable. Agreement at all points is taken as identity.
PROBE_POINTS = ((0.5772156649, 1.6180339887, 2.7182818285, 0.3183098862),
                (1.4142135624, 0.6931471806, 1.7320508076, 2.2360679775),
                (2.5029078751, 1.2020569032, 0.9159655942, 1.3247179572))  # fmt: skip
REL_TOL = 1e-6
MAX_KEY_CHARS = 8000  # a longer normal form is not kept (the parent caches 8192 keys)
_MAX_FREE_SYMBOLS = 4


@lru_cache(maxsize=1)
def _env() -> tuple[dict[str, Any], dict[str, Any], tuple[Any, ...]]:
    """Globals, locals and transformations for ``parse_expr``.

    ``parse_expr`` evaluates Python code, so the parent sends only whitelisted tokens (digits,
    single letters renamed ``v_x``, a few function names, ``+-*/^()``) and ``eval`` sees no
    builtins.
    """
    import sympy
    from sympy.parsing import sympy_parser as sp

    global_dict: dict[str, Any] = {
        name: getattr(sympy, name)
        for name in ("Integer", "Float", "Rational", "Symbol", "Function", "Add", "Mul", "Pow")
    }
    global_dict["__builtins__"] = {}
    local_dict: dict[str, Any] = {
        "sqrt": sympy.sqrt,
        "ln": sympy.log,
        "log": sympy.log,
        "exp": sympy.exp,
        "sin": sympy.sin,
        "cos": sympy.cos,
        "tan": sympy.tan,
        "pi": sympy.pi,
        "oo": sympy.oo,
        "e": sympy.E,
        "i": sympy.I,
    }
    for letter in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ":
        local_dict[f"v_{letter}"] = sympy.Symbol(letter)
    transformations = (
        *sp.standard_transformations,
        sp.implicit_multiplication,
        sp.convert_xor,
        sp.rationalize,
    )
    return global_dict, local_dict, transformations


@lru_cache(maxsize=4096)
def _parse(source: str) -> Any:
    import sympy
    from sympy.parsing.sympy_parser import parse_expr

    global_dict, local_dict, transformations = _env()
    expr = parse_expr(
        source, transformations=transformations, local_dict=local_dict, global_dict=global_dict
    )
    return expr if isinstance(expr, sympy.Expr) else None


def value(source: str, cancel: bool) -> list[Any] | None:
    """``[key, "p/q" or None, float or None]`` of an answer, or None when it has no value.

    The key is ``srepr`` of sympy's automatic normal form (it orders terms and folds constants:
    ``sqrt(8)`` is ``2*sqrt(2)``), after ``cancel`` when ``cancel`` (the parent's estimate says
    it is cheap) so that ``x(x+1)`` and ``x^2+x`` share it. No ``simplify`` (seconds on some
    trig input); identities beyond this are :func:`equal`'s."""
    import sympy

    try:
        expr = _parse(source)
        if expr is None or expr.has(sympy.zoo, sympy.nan):
            return None
        if expr.is_Rational:
            return [None, f"{int(expr.p)}/{int(expr.q)}", None]
        if expr.free_symbols:
            key = sympy.srepr(expr)
            if cancel:
                cancelled = sympy.srepr(sympy.cancel(expr))
                key = cancelled if len(cancelled) <= MAX_KEY_CHARS else key
            return [key, None, None] if len(key) <= MAX_KEY_CHARS else None
        approx = complex(sympy.N(expr))
        real = approx.real if approx.imag == 0 and math.isfinite(approx.real) else None
        key = sympy.srepr(expr)
        return [key, None, real] if len(key) <= MAX_KEY_CHARS else None
    except Exception:  # sympy raises a zoo of types (and RecursionError) on odd input
        return None


def equal(a: str, b: str) -> bool:
    """Numeric identity test: ``a - b`` vanishes at a few probe points. Unlike
    ``simplify(a - b)`` it costs milliseconds, and it sees trig and log identities."""
    try:
        ea, eb = _parse(a), _parse(b)
        if ea is None or eb is None:
            return False
        variables = sorted(ea.free_symbols | eb.free_symbols, key=str)
        if len(variables) > _MAX_FREE_SYMBOLS:
            return False
        for point in PROBE_POINTS if variables else PROBE_POINTS[:1]:
            subs = dict(zip(variables, point, strict=False))
            va, vb = complex(ea.evalf(subs=subs)), complex(eb.evalf(subs=subs))
            if not _complex_close(va, vb):
                return False
        return True
    except Exception:
        return False


def _complex_close(a: complex, b: complex) -> bool:
    if not all(map(math.isfinite, (a.real, a.imag, b.real, b.imag))):
        return a == b
    scale = max(abs(a), abs(b))
    return abs(a - b) <= REL_TOL * scale + 1e-12


def warm() -> bool:
    """Import sympy and run one parse, so that the first real call is not the slow one."""
    return value("(v_x^2-1)/(v_x-1)", True) is not None and equal("v_x+1", "1+v_x")
