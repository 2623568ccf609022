"""Sans-I/O core: the logic that is hard to get right, with no network and no Airflow import."""
