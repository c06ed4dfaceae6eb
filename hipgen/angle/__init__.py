"""Norberg-angle measurement: the two-stage keypoint pipeline shared by training, evaluation, the CLI
and AngleService (numpy + OpenCV only; models run behind :mod:`hipgen.inference`)."""
