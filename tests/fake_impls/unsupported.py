"""Cannot run any model: every point must be recorded as unavailable with this reason."""


def supports(cfg):
    return f"{cfg.name} is not supported by this test implementation"


def build(source, dtype, backend):
    raise AssertionError("build must not be called for an unsupported model")
