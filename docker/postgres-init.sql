-- One PostgreSQL server, a database for each service. Run once, on an empty data directory.
CREATE DATABASE prefect;
CREATE DATABASE mlflow;
