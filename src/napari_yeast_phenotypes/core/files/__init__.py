"""Files: written whole or not at all (:mod:`.atomic`), locked between writers (:mod:`.locking`),
known by their content (:mod:`.fingerprint`), CSV tables written and read (:mod:`.tables`), reached inside a named
folder and never through a link (:mod:`.inside`), read as JSON without a recursion error (:mod:`.jsonfile`), and
the package's cache and settings folders (:mod:`.paths`)."""

from .._face import public_face

__getattr__, __dir__, __all__ = public_face(__name__, {
    "atomic_write": ".atomic", "check_writable_dir": ".atomic", "check_writable_file": ".atomic",
    "FileLock": ".locking", "LockHeld": ".locking",
    "file_sha256": ".fingerprint", "array_sha256": ".fingerprint", "describe_file": ".fingerprint",
    "model_fingerprint": ".fingerprint",
    "write_csv": ".tables", "read_own_csv": ".tables", "read_user_csv": ".tables",
    "OutsideFolder": ".inside", "open_inside": ".inside", "path_inside": ".inside", "tree_inside": ".inside",
    "loads_json": ".jsonfile",
    "cache_dir": ".paths", "config_dir": ".paths", "demo_models": ".paths",
})
