"""Evaluation: tasks (toy, GSM8K, sandboxed HumanEval) behind one interface (`tasks.TASKS`), scoring with
Wilson intervals, running a task on a loaded model, and the fidelity proxy against full precision.

May import `advisor.models`, `advisor.quant` and the leaf modules (`errors`, `files`, `registry`).
"""
