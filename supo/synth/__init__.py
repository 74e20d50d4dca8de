"""FunReason-MT-style task synthesis (arXiv 2510.24645) without LLMs: API graphs over simulated backends
(:mod:`~supo.synth.api_graph`, :mod:`~supo.synth.families`), Eq. 2 walks, advanced tools, hard queries and the
Phase III validation filter with a scripted solver and critic (:mod:`~supo.synth.tasks`). The environment that runs
the tasks is :mod:`supo.envs.funcall`."""
