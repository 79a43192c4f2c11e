-- The stack's databases: Dagster's instance storage (POSTGRES_DB), MLflow's store, the results.
CREATE DATABASE mlflow;
CREATE DATABASE results;
