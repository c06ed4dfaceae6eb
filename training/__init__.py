"""Offline jobs: training, screening and export to ``model_repository/`` (imports torch; never imported
by the services)."""
