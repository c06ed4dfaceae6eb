"""Blind reader studies: can a reader tell hipgen's synthetic radiographs from real ones?

:mod:`hipgen.review.display` turns any radiograph into a clean PNG for a browser (pixels only, nothing
that could reveal its origin or a patient); :mod:`hipgen.review.study` plans a balanced, shuffled study
and scores the answers. No web framework and no torch: the service in ``services/review`` builds on this.
"""
