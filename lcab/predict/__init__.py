"""lcab.predict: a calibrated model of a CP cell's time at any world size, and which strategy to
use on a given cluster.

  cluster.py      ClusterModel: GPUs per node, per-collective bus bandwidth and latency per level
                  (lcab/conf/cluster_model/<name>.yaml), the calibration file of its step kernel
  planonly.py     a strategy's per-rank steps (areas, tile work, kernel calls), messages and their
                  order, from the mask's row intervals: no tensors, no processes, W up to 1024
  kernel_fit.py   step-kernel time = per-call cost + tile FLOPs / rate + per-row cost, fitted on
                  lcab's own single-GPU kernel rows
  comm.py         alpha-beta time of each collective on the topology (which level it crosses)
  overlap.py      each strategy's timeline: what hides under compute and what is exposed
  model.py        plan + kernel fit + comm + overlap -> Prediction (time, TFLOPs/s, bottleneck)
  recommend.py    every candidate (strategy, shard, degrees) for a cluster, mask, length, world
  calibrate.py    fits the constants and writes calibration/<kernels>.json with the cells used
  validate.py     predicts every ok CP cell of stores; error only on cells not used for fitting
  cli.py          python -m lcab.predict {recommend,validate,calibrate,links,sweep}
"""
