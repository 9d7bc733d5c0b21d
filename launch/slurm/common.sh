# Shared by launch/slurm/stage{1,2,3,4}.sbatch (sourced, not run): one `accelerate launch` per node through srun.
#
# Submit from the repository root, with the environment that has infimm_hd installed active (sbatch passes the
# submitting shell's environment on):
#   sbatch launch/slurm/stage1.sbatch            # then stage2, stage3, stage4 (each reads the last one's final/)
#   sbatch --nodes=1 launch/slurm/stage2.sbatch  # another node count: the scripts follow SLURM_NNODES
#
# Settings, all from the environment and all optional:
#   RUNS          where the stages write (default: runs): stage N writes $RUNS/stageN, reads $RUNS/stage<N-1>/final
#   DATA          the data_prep output root the stages read (default: $RUNS/data)
#   ASSEMBLED     stage 1's --init (default: $RUNS/assembled): EVA02-CLIP-E + Vicuna-13B assembled with
#                 infimm_hd.from_components and save_pretrained (paper-13b has no offline weights)
#   CONFIG        the accelerate config (default: launch/accelerate/fsdp2_8gpu.yaml)
#   GPUS_PER_NODE must match #SBATCH --gpus-per-node (default: 8)
#   MASTER_PORT   the rendezvous port on the first node (default: 29500 + job id % 1000)
#   DRY_RUN       when set, print the srun command instead of running it
# Anything after the script name goes to the stage script: `sbatch launch/slurm/stage4.sbatch --objective sft`.

set -eu  # no pipefail: `scontrol ... | head -n1` may end scontrol with SIGPIPE, which is fine

: "${SLURM_JOB_NODELIST:?run this under sbatch (or set the SLURM_* variables for a dry run)}"
: "${SLURM_NNODES:?run this under sbatch}"
RUNS=${RUNS:-runs}
DATA=${DATA:-$RUNS/data}
ASSEMBLED=${ASSEMBLED:-$RUNS/assembled}
CONFIG=${CONFIG:-launch/accelerate/fsdp2_8gpu.yaml}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)
if [[ -z $MASTER_ADDR ]]; then
    echo "scontrol show hostnames $SLURM_JOB_NODELIST gave no host" >&2
    exit 1
fi
MASTER_PORT=${MASTER_PORT:-$((29500 + ${SLURM_JOB_ID:-0} % 1000))}
export MASTER_ADDR MASTER_PORT
# Slurm >= 22.05: srun no longer inherits the batch's --cpus-per-task (each node's data workers need them).
if [[ -n ${SLURM_CPUS_PER_TASK:-} ]]; then
    export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK
fi

if [[ ! -f $CONFIG ]]; then
    echo "CONFIG=$CONFIG is not a file (submit from the repository root, or give its full path)" >&2
    exit 1
fi
if grep -q '^distributed_type: *DEEPSPEED' "$CONFIG"; then
    # Fail here rather than after loading 18B parameters on every GPU of the allocation.
    echo "CONFIG=$CONFIG is a DeepSpeed config, which infimm_hd.training.loop.train refuses (see launch/README.md);" \
        "use launch/accelerate/fsdp2_8gpu.yaml" >&2
    exit 1
fi

# launch_stage MODULE STAGE_ARGS...: every node runs one `accelerate launch`, which starts GPUS_PER_NODE processes.
# The inner command is single-quoted so that $SLURM_NODEID expands on each node (0, 1, ...), not once here.
launch_stage() {
    local module=$1
    shift
    local command=(
        srun --kill-on-bad-exit=1 --ntasks-per-node=1
        bash -c 'exec accelerate launch --machine_rank "$SLURM_NODEID" "$@"' accelerate-launch
        --config_file "$CONFIG"
        --num_machines "$SLURM_NNODES"
        --num_processes "$((SLURM_NNODES * GPUS_PER_NODE))"
        --main_process_ip "$MASTER_ADDR"
        --main_process_port "$MASTER_PORT"
        -m "$module" --preset paper-13b --mixed-precision bf16 --data "$DATA" "$@"
    )
    if [[ -n ${DRY_RUN:-} ]]; then
        printf '%q ' "${command[@]}"
        printf '\n'
    else
        echo "stage launch on $SLURM_NNODES node(s), rendezvous at $MASTER_ADDR:$MASTER_PORT, config $CONFIG" >&2
        "${command[@]}"
    fi
}
