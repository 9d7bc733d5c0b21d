"""Training planner: per-GPU memory, FLOPs and step time of a stage before a cluster is rented (`plan.plan_train`),
measured unit laws behind it (`probe`, `shape_laws`, `law_cache`, `live_memory`), and the FSDP2 sharding rehearsal
(`rehearsal`)."""
