"""hipgen: synthetic canine hip radiographs with a requested Norberg angle — generate, measure, score."""

__version__ = "0.1.0"
