"""Arithmetic answers as a small tree, read and bounded in-process before anything evaluates them.

:mod:`winnow.answers.final` turns an answer into plain text (``((1)/(2))``, ``sqrt(8)``, ``2^(10)``,
``x^2+1``) and reads it into a tree with the grammar sympy would apply to the same text
(:mod:`winnow.answers.grammar`). This module takes the tree and, without evaluating anything:

* **bounds** it (:func:`read`): estimates, node by node, how many digits the exact numbers sympy
  would compute have, how far from 1 (in decades) a value can be at the probe points, how large
  the arguments of ``sin``/``cos``/``tan``/``exp`` are, and how much ``cancel`` would multiply
  out. An answer past a bound is refused with the reason, before sympy or Python's big integers
  see it: ``((10^1000)^1000)^1000`` has about 10^9 digits, ``\\sin(10^(10^6))`` needs a million
  digits of pi, ``9^9^9`` has an exponent of 387 million;
* says whether it is **reduced** to a value: an arithmetic operator between two numbers
  (``1 + 4``, ``-(2 + -5)``, ``7 * 8``, ``\\frac{1}{2} + \\frac{1}{3}``, ``2 3``) is a
  calculation, not a final answer. A fraction of two numbers (``3/4``, ``\\frac{6}{8}``), a
  negative number, a power (``2^{10}``, ``3 \\cdot 10^8``) and anything with a symbol, a constant
  or a function (``2\\sqrt{2}``, ``1 + \\sqrt{5}``, ``\\frac{\\pi}{2}``) are values;
* **evaluates** exactly, with :class:`fractions.Fraction`, what is plain rational arithmetic
  (integer powers of rationals): ``2^{10}``, ``3 \\cdot 10^8``, ``-(3)``. Only what has symbols,
  constants, functions or fractional powers needs sympy (a worker process, see
  :mod:`winnow.answers.symbolic`).

The bounds are estimates from above: a value they admit is cheap to compute. They are not a proof
about sympy (whose evaluation this grammar only mirrors), so the sympy part still runs under a
hard deadline in a worker process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from winnow.answers.grammar import Node

__all__ = [
    "MAX_DIGITS",
    "MAX_EXPONENT",
    "Reading",
    "Refused",
    "read",
]

MAX_EXPONENT = 1000  # |exponent| of a power without variables in its exponent: 2^1000 is cheap
MAX_DIGITS = 4000  # decimal digits of any exact number computed (Python prints up to 4300)
MAX_TRIG_DECADES = 100  # sin/cos/tan of |x| <= 10^100: N() reduces x mod pi with ~100 digits
MAX_EXP_ARGUMENT = 10_000  # exp(x) for |x| <= 10^4 (a value of ~10^4343)
MAX_DECADES = 10_000  # |log10 |value|| anywhere, at the probe points for variables
MAX_CANCEL_WORK = 1000  # estimated term products cancel() may multiply out; more: not expanded
MAX_CANCEL_DEGREE = 64  # and its degree: (x+1)^400 has 400-digit coefficients (and a 50 kB key)
MAX_FREE_SYMBOLS = 4

_PROBE_DECADES = 0.51  # the probe points lie in [0.31, 2.72]: |log10 x| <= 0.51


class Refused(Exception):
    """The answer is well-formed but past a bound (the message says which)."""


@dataclass(frozen=True, slots=True)
class Reading:
    """What :func:`read` found out about an answer, without sympy."""

    reduced: bool  # no operator between two numbers
    number: Fraction | None  # the exact value, when the answer is plain rational arithmetic
    symbols: int  # distinct variables
    cancel: bool  # cheap enough for sympy's cancel() (variables only)


def read(node: Node) -> Reading:
    """Bound ``node`` (raise :class:`Refused` past a bound) and say what it is."""
    measure = _Measurer()
    m = measure(node)
    if len(measure.symbols) > MAX_FREE_SYMBOLS:
        raise Refused(f"more than {MAX_FREE_SYMBOLS} variables")
    return Reading(
        reduced=not measure.unreduced,
        number=m.exact,
        symbols=len(measure.symbols),
        cancel=not m.constant
        and measure.work <= MAX_CANCEL_WORK
        and measure.degree <= MAX_CANCEL_DEGREE,
    )


# ---------------------------------------------------------------------------------------------
# the bounds


@dataclass(slots=True)
class _M:
    """Bounds of one subtree."""

    digits: float  # log10 of the largest numerator/denominator of exact numbers computed in it
    decades: float  # an estimate from above of |log10 |value||, variables at the probe points
    exact: Fraction | None = None  # the value, when the subtree is plain rational arithmetic
    variables: frozenset[str] = frozenset()  # symbols and generators (sin(x), sqrt(x+1))
    numerator_terms: float = 1.0  # when multiplied out over a common denominator (cancel)
    denominator_terms: float = 1.0
    degree: float = 0.0

    @property
    def constant(self) -> bool:
        return not self.variables


def _digits(value: Fraction) -> float:
    top = max(abs(value.numerator), value.denominator)
    return math.log10(top) if top > 1 else 0.0


def _pow10(decades: float) -> float:
    return 10.0**decades if decades < 300 else math.inf


def _power_terms(terms: float, n: int) -> float:
    """``terms ** n`` capped at 10^12 (a float power would overflow)."""
    return terms**n if n * math.log10(max(terms, 1.0)) < 12 else 1e12


def _is_literal(node: Node) -> bool:
    while node.kind == "neg":
        node = node.args[0]
    return node.kind == "num"


def _is_number(node: Node) -> bool:
    """A number as written: a literal, or a fraction of two literals (``3/4``), signed."""
    while node.kind == "neg":
        node = node.args[0]
    if node.kind == "div":
        return all(_is_literal(a) for a in node.args)
    return node.kind == "num"


def _monomials(terms: float, degree: float, variables: frozenset[str]) -> float:
    """At most this many terms: a polynomial of ``degree`` in ``variables`` has no more."""
    if not variables or degree > 10_000:
        return terms
    return min(terms, float(min(math.comb(int(degree) + len(variables), len(variables)), 10**12)))


class _Measurer:
    def __init__(self) -> None:
        self.symbols: set[str] = set()
        self.unreduced = False
        self.work = 0.0  # cancel(): estimated products of terms it would multiply out
        self.degree = 0.0  # the largest polynomial degree (cancel works on dense polynomials)

    def __call__(self, node: Node) -> _M:
        kind = node.kind
        if kind in ("add", "sub", "mul", "div"):
            a, b = node.args
            if (
                _is_number(a)
                and _is_number(b)
                and not (kind == "div" and _is_literal(a) and _is_literal(b))
            ):
                self.unreduced = True  # 1 + 4, 7 * 8, (1/2)/3: a calculation, not a value
        m = getattr(self, "_" + kind)(node)
        if not m.digits <= MAX_DIGITS:
            raise Refused(
                f"a number in it would have about {_about(m.digits)} digits (at most {MAX_DIGITS})"
            )
        if not m.decades <= MAX_DECADES:
            raise Refused(
                f"a value in it would be about 10^{_about(m.decades)} (at most 10^{MAX_DECADES})"
            )
        self.degree = max(self.degree, m.degree)
        return m

    # leaves

    def _num(self, node: Node) -> _M:
        assert node.value is not None
        digits = _digits(node.value)
        return _M(digits, digits, exact=node.value)

    def _sym(self, node: Node) -> _M:
        self.symbols.add(node.name)
        return _M(0.0, _PROBE_DECADES, variables=frozenset((node.name,)), degree=1.0)

    def _const(self, node: Node) -> _M:
        return _M(0.0, _PROBE_DECADES if node.name in ("pi", "e") else 0.0)

    def _generator(self, node: Node, digits: float, decades: float, inner: _M) -> _M:
        """A subtree cancel() treats as one variable: sin(x), sqrt(x+1), 2^x."""
        if inner.constant:
            return _M(digits, decades)
        return _M(digits, decades, variables=frozenset((f"#{id(node)}",)), degree=1.0)

    # arithmetic

    def _neg(self, node: Node) -> _M:
        m = self(node.args[0])
        return _M(
            m.digits,
            m.decades,
            -m.exact if m.exact is not None else None,
            m.variables,
            m.numerator_terms,
            m.denominator_terms,
            m.degree,
        )

    def _add(self, node: Node) -> _M:
        return self._sum(node, 1)

    def _sub(self, node: Node) -> _M:
        return self._sum(node, -1)

    def _sum(self, node: Node, sign: int) -> _M:
        a, b = (self(x) for x in node.args)
        exact = a.exact + sign * b.exact if a.exact is not None and b.exact is not None else None
        cross = a.numerator_terms * b.denominator_terms + b.numerator_terms * a.denominator_terms
        denominator = a.denominator_terms * b.denominator_terms
        if a.variables or b.variables:
            self.work += cross + denominator
        variables = a.variables | b.variables
        degree = max(a.degree, b.degree)
        return _M(
            a.digits + b.digits + 0.31,
            max(a.decades, b.decades) + 0.31,
            exact,
            variables,
            _monomials(cross, degree, variables),
            _monomials(denominator, degree, variables),
            degree,
        )

    def _mul(self, node: Node) -> _M:
        a, b = (self(x) for x in node.args)
        exact = a.exact * b.exact if a.exact is not None and b.exact is not None else None
        return self._product(a, b, exact, (a.numerator_terms, b.numerator_terms),
                             (a.denominator_terms, b.denominator_terms))  # fmt: skip

    def _div(self, node: Node) -> _M:
        a, b = (self(x) for x in node.args)
        exact = None
        if a.exact is not None and b.exact is not None:
            exact = a.exact / b.exact  # ZeroDivisionError: undefined (the caller's concern)
        return self._product(a, b, exact, (a.numerator_terms, b.denominator_terms),
                             (a.denominator_terms, b.numerator_terms))  # fmt: skip

    def _product(
        self,
        a: _M,
        b: _M,
        exact: Fraction | None,
        numerators: tuple[float, float],
        denominators: tuple[float, float],
    ) -> _M:
        numerator = numerators[0] * numerators[1]
        denominator = denominators[0] * denominators[1]
        variables = a.variables | b.variables
        if variables:
            self.work += numerator + denominator  # each term of one side times each of the other
        degree = a.degree + b.degree
        return _M(
            a.digits + b.digits,
            a.decades + b.decades,
            exact,
            variables,
            _monomials(numerator, degree, variables),
            _monomials(denominator, degree, variables),
            degree,
        )

    def _pow(self, node: Node) -> _M:
        base, exponent = (self(x) for x in node.args)
        if not exponent.constant:  # 2^x, x^x: nothing exact is raised to it
            size = _pow10(exponent.decades)
            if not size <= MAX_EXPONENT:
                raise Refused(f"the exponent of a power may exceed {MAX_EXPONENT}")
            return self._generator(
                node, base.digits + exponent.digits, base.decades * size, exponent
            )
        integer = exponent.exact is not None and exponent.exact.denominator == 1
        if exponent.exact is not None:
            size = math.inf if exponent.digits > 15 else float(abs(exponent.exact))
            top = abs(exponent.exact.numerator) if exponent.digits <= 15 else math.inf
        else:  # 2^pi, 2^sqrt(2): a float exponent, nothing exact is raised to it
            size, top = _pow10(exponent.decades), 0
        if not size <= MAX_EXPONENT:
            raise Refused(
                f"the exponent of a power is {_size(size, exponent.decades)}, past {MAX_EXPONENT}"
            )
        digits = base.digits * max(top, 1) + exponent.digits
        decades = base.decades * size
        if not (digits <= MAX_DIGITS and decades <= MAX_DECADES):
            return _M(digits, decades)  # refused by the caller, with the reason
        exact = None
        if base.exact is not None and integer:
            exact = base.exact ** int(exponent.exact)  # ZeroDivisionError: 0^-1
        if base.constant:
            return _M(digits, decades, exact)
        if not integer:
            return self._generator(node, digits, decades, base)  # (x+1)^(1/2)
        n = abs(int(exponent.exact))
        degree = base.degree * n
        numerator = _monomials(_power_terms(base.numerator_terms, n), degree, base.variables)
        denominator = _monomials(_power_terms(base.denominator_terms, n), degree, base.variables)
        self.work += (numerator + denominator) * max(base.numerator_terms, base.denominator_terms)
        if exponent.exact < 0:
            numerator, denominator = denominator, numerator
        return _M(digits, decades, None, base.variables, numerator, denominator, degree)

    def _call(self, node: Node) -> _M:
        m = self(node.args[0])
        name = node.name
        if name in ("sin", "cos", "tan"):
            if not m.decades <= MAX_TRIG_DECADES:
                raise Refused(
                    f"{name} of a number that may exceed 10^{MAX_TRIG_DECADES} "
                    f"(it is about 10^{_about(m.decades)})"
                )
            decades = 1.0
        elif name == "exp":
            if not _pow10(m.decades) <= MAX_EXP_ARGUMENT:
                raise Refused(f"exp of a number that may exceed {MAX_EXP_ARGUMENT}")
            decades = _pow10(m.decades) / math.log(10)
        elif name in ("ln", "log"):
            decades = math.log10(2.31 * max(m.decades, _PROBE_DECADES) + 1.0) + 1.0
        else:  # sqrt
            decades = m.decades / 2
        return self._generator(node, m.digits, decades, m)


def _about(decades: float) -> str:
    if not decades < 1e15:
        return "more than 10^15"
    return f"{round(decades):,}"


def _size(size: float, decades: float) -> str:
    if size < 1e6:
        return f"{size:g}"
    return f"about 10^{_about(decades)}"
