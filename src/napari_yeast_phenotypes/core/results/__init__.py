"""Results: the tables' schema and :class:`~.schema.Result` (:mod:`.schema`), the result folder written whole
(:mod:`.folder`), CSV export (:mod:`.export`), the summary figure (:mod:`.plots`) and senescence as
survival (:mod:`.survival`; its table :mod:`.survival_table`, statistics :mod:`.survival_stats` and figure
:mod:`.survival_figure`). No torch here."""

from .._face import public_face

__getattr__, __dir__, __all__ = public_face(__name__, {
    "Result": ".schema", "prob_columns": ".schema", "cell_columns": ".schema", "track_columns": ".schema",
    "ResultFolder": ".folder", "result_complete": ".folder", "RESULT_FILES": ".folder", "RUN_FILE": ".folder",
    "write_tables": ".export", "save_summary": ".plots", "summary_figure": ".plots",
    "senescence_survival": ".survival", "ageing_figure": ".survival_figure",
})
