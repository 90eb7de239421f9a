"""The sections of ``benchmarks/run.py``, one module per figure family.

Each module has a ``run(ctx)`` that returns the top-level JSON keys it contributes (and may add
to ``ctx``); sections that need a fresh process have a ``child(args)`` that ``run.py --child``
calls and that prints one JSON line. Every section uses only public functions of the package.
"""
