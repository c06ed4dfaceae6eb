"""ScoreService: compare a synthetic image set with a reference set."""

from services.score.servicer import ScoreServicer

__all__ = ["ScoreServicer"]
