"""``make bench``: the hot paths measured against bare baselines, production-like.

``python -m bench`` starts the service as production runs it (:mod:`bench.stack`), runs every
measure of :mod:`bench.measures` as interleaved A/B rounds and writes ``docs/PERFORMANCE.md``
(:mod:`bench.report`). The bare baseline view (:mod:`bench.views`) and the no-op task
(``bench.tasks``) exist only under :mod:`bench.settings`, never in the product's URLs or tasks.
"""
