# Thin wrapper over CMake. `make test` is what CI runs; `make quickstart` is the main job.
BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps configure build test quickstart bench torch2-check format clean

all: build

deps:
	./scripts/install-deps.sh

$(BUILD_DIR)/build.ninja:
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_FLAGS)

configure: $(BUILD_DIR)/build.ninja

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)
	@if readelf -d $(BUILD_DIR)/bin/isoflop-train 2>/dev/null | grep -qE 'f77blas|atlas'; then \
	  echo "error: isoflop-train links ATLAS (Ceres leaked into it); see DESIGN.md" >&2; exit 1; fi

test: deps build
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j $(JOBS) --timeout 900

quickstart: deps build
	./scripts/quickstart.sh

bench: build
	./bench/run-all.sh $(BUILD_DIR)

# The trainer against LibTorch 2.x (Debian trixie's 2.6, or SUITE=sid for sid's 2.14, fetched
# into /tmp; nothing installed).
torch2-check: build
	./scripts/torch2-check.sh $(if $(SUITE),--suite $(SUITE))

format:
	git ls-files '*.cc' '*.h' | xargs clang-format -i

clean:
	rm -rf $(BUILD_DIR)
