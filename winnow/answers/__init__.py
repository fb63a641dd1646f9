"""Reading and comparing answers: the final answer of a response (:mod:`.extract`), its text
made plain (:mod:`.latex`) and parsed (:mod:`.grammar`), its value (:mod:`.final`, bounded by
:mod:`.expr`, with sympy (:mod:`.symbolic`) only in worker processes (:mod:`.workers`,
:mod:`.sandbox`)), and answers grouped for voting (:mod:`.groups`)."""
