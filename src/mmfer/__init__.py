"""mmfer: emotion in speech from what is said and how it is said (see README and docs/api.md).

    import mmfer
    model = mmfer.load("runs/mmmf")
    model.predict("utterance.wav").emotion

The names below come from ``mmfer.api``, imported on first use so that ``import mmfer.<stage>`` stays light.
"""

__version__ = "0.1.0"

_API = ("prepare", "cross_validate", "compare", "report", "load", "config", "Model", "Prediction", "Summary",
        "MmferError")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from mmfer import api

        return getattr(api, name)
    raise AttributeError(f"module 'mmfer' has no attribute {name!r}")
