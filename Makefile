# bbexport: every target is a thin wrapper over the `bbexport` CLI or pytest.
# `make demo` and `make test` set everything up on a fresh machine.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torchvision (needed by timm, the parity reference) pins its torch release.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

MODEL ?= ghostnet_100
OPSET ?= 17
PRECISION ?= fp16
CALIB ?=
FAMILY ?= resnet
OUT ?= artifacts

.PHONY: install test lint onnx quantize trt report demo bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check exporter model_defs calibration tests benchmarks

onnx: install
	$(BIN)/bbexport onnx $(MODEL) --opset $(OPSET) --out $(OUT)

clean:
	rm -rf $(OUT) reports .pytest_cache
