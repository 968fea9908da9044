"""System tests: the service as real processes (Apache through mod_wsgi-express, run.sh, model
servers, Redis, network namespaces, a browser, deploy/install.sh), fault injection, the backend
matrix, the benchmark tooling and the installed package."""
