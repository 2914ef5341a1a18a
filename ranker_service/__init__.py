"""ranker_service: the online ranking API."""
