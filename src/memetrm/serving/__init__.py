"""Serving a trained model: ``Predictor`` (Python), ``create_app`` (HTTP + web page), ``OCR``.

``create_app`` lives in ``memetrm.serving.app``, not imported here, so batch prediction
does not pull in FastAPI.
"""

from memetrm.serving.ocr import OCR
from memetrm.serving.predictor import Predictor

__all__ = ["OCR", "Predictor"]
