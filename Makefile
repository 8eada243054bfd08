# Top-level wrapper: the two commands a new user needs.
#   make demo   install missing Debian packages, build, generate a story with the bundled model
#   make test   install, build, run every test (ctest), then the ASan+UBSan build's tests
#   make lora-demo  fine-tune the bundled model on tiny Shakespeare (LoRA + QLoRA, fuse) and print the results
BUILD ?= build
ASAN_BUILD ?= build-asan
JOBS ?= $(shell nproc)

.PHONY: all deps build demo lora-demo test test-fast asan fuzz clean

all: build

deps:
	@sh scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release > /dev/null
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	./$(BUILD)/lmx generate --prompt "Once upon a time" --max-tokens 200

# The CLI test tests/cli/test_lora_demo.sh with more iterations (ctest runs 60).
LORA_DEMO_ITERS ?= 300
lora-demo: build
	sh tests/cli/test_lora_demo.sh $(CURDIR)/$(BUILD)/lmx $(CURDIR) $(CURDIR)/$(BUILD)/example_generate $(LORA_DEMO_ITERS)

test-fast: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DLMX_SANITIZE=ON -DLMX_CUDA=OFF > /dev/null
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ctest --output-on-failure -j $(JOBS) -LE "slow|interop" $(CTEST_ARGS)

test: test-fast asan

FUZZ_SECONDS ?= 60
fuzz: deps
	cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLMX_FUZZ=ON -DLMX_CUDA=OFF > /dev/null
	cmake --build build-fuzz -j $(JOBS)
	sh scripts/run-fuzzers.sh build-fuzz $(FUZZ_SECONDS)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz
