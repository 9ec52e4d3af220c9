from baselines import lrp, rollout  # noqa: F401
