"""`recsys report`: a self-contained HTML report of the latest run and its trend."""
