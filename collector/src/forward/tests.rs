// unit tests: added below
