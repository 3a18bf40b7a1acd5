#!/usr/bin/env bash
# The speed figures of docs/benchmarks.md: benchmarks/speed.py for each backbone and crop, then
# the speed options on ViT-S at crop 224. CPU-exclusive: run nothing else meanwhile.
#
#   cosa data synthetic --out DATA --seed 5 --train 60 --val 8 --size 512
#   benchmarks/speed_matrix.sh DATA [OUT_DIR]      (default benchmarks/results)
set -euo pipefail
data=$1
out=${2:-benchmarks/results}
python=${PYTHON:-python}
common=(voc --data "$data" --infer-batch 2 --infer-batches 3 data.train_split=train data.val_split=val
        model.pretrained=none train.batch_size=2)

run() {  # label, then speed.py arguments
    local label=$1
    shift
    "$python" benchmarks/speed.py "${common[@]}" --label "$label" --out "$out/speed-$label.json" "$@"
}

# The acceptance figure: ViT-S, crop 448, batch 2, fp32, 20 measured steps.
run vit-s-448 --infer-size 448 model.backbone=vit_small_patch16_224 data.crop_size=448
for crop in 224 448; do
    run "vit-ti-$crop" --infer-size "$crop" model.backbone=vit_tiny_patch16_224 "data.crop_size=$crop"
done
run vit-s-224 --infer-size 224 model.backbone=vit_small_patch16_224 data.crop_size=224
run vit-b-224 --steps 5 --infer-size 224 model.backbone=vit_base_patch16_224 data.crop_size=224
run vit-b-448 --steps 3 --warmup 1 --profile-steps 1 --infer-size 448 model.backbone=vit_base_patch16_224 \
    data.crop_size=448

# Options, each against the ViT-S 224 row above.
vit_s_224=(--steps 10 --infer-size 224 model.backbone=vit_small_patch16_224 data.crop_size=224)
run vit-s-224-an-1-scale "${vit_s_224[@]}" "method.assignment_scales=[1.0]"
run vit-s-224-bf16 --steps 3 --warmup 1 --profile-steps 1 --infer-batches 1 --infer-size 224 \
    model.backbone=vit_small_patch16_224 data.crop_size=224 train.amp=bf16 train.assignment_amp=bf16
