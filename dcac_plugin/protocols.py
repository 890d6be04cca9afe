"""Dataset short codes used in protocol names such as ``MA->MS`` (light: no torch import)."""

from __future__ import annotations

#: torchreid dataset name -> the code the DG literature uses.
DATASET_CODES: dict[str, str] = {
    "market1501": "MA",
    "dukemtmcreid": "D",
    "msmt17": "MS",
    "msmt17_trainval": "MS",
    "cuhk03_np": "C3",
    "cuhk03": "C3",
}
