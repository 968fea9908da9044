"""What the tests share: the process harness, the web fixtures, generated and hostile inputs."""
