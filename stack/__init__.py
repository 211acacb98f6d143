"""Local stand-ins for the services the DAGs talk to, for the offline demo and the tests."""
