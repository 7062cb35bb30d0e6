"""Shared test setup.

Small models on a busy 2-core machine train far faster with one intra-op thread
(see ../shared/PANEL_NOTES.md): the whole suite runs with one.
"""

import torch

torch.set_num_threads(1)
