"""Unit tests, one folder per subpackage of keras_rest_api; in-process, against a real Redis
where the code under test talks to one."""
