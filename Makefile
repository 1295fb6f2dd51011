# ferrovm: `make run` boots the test guest with a QMP socket; `make test` runs every test.
CARGO    ?= cargo
BUILD    := $(abspath build)
FERROVM  := target/release/ferrovm
GUEST    := $(BUILD)/testguest.elf
PY       := $(BUILD)/venv/bin/python
QMP_SOCK := $(BUILD)/qmp.sock

.PHONY: all deps build run run-firmware test unit integration lint bench linux clean docs fuzz \
  iotests iotests-subset

all: build

deps:
	@scripts/deps.sh

build: deps
	$(CARGO) build --release --locked -p ferrovm
	$(MAKE) -s -C firmware/testguest OUT=$(BUILD)
	$(MAKE) -s -C firmware/bootdisk OUT=$(BUILD)

# Boots the test guest in its idle plan with a virtio disk (build/disk.img) and a
# balloon (QMP query-balloon): it checks the disk, prints a tick every 100 ms and
# powers off when the ACPI power button is pressed (QMP system_powerdown).
run: build
	@test -f $(BUILD)/disk.img || truncate -s 64M $(BUILD)/disk.img
	@echo "QMP socket: $(QMP_SOCK)   (e.g. $(PY) -m qemu.qmp.qmp_shell $(QMP_SOCK))"
	$(FERROVM) -accel kvm -m 128 -smp 2 -nodefaults -display none -serial stdio \
	  -qmp unix:$(QMP_SOCK),server=on,wait=off \
	  -drive file=$(BUILD)/disk.img,format=raw,if=none,id=disk0 \
	  -device virtio-blk-pci,drive=disk0,id=vdisk0 -device virtio-balloon-pci,id=balloon0 \
	  -kernel $(GUEST) -append "plan=idle"

# Boots a disk through SeaBIOS (no -kernel): the boot disk of the firmware tests.
run-firmware: build
	@$(PY) -c "import sys; sys.path.insert(0, 'tests'); import bootdisk; bootdisk.compose('$(BUILD)/bootdisk.img', 'disk A')"
	@echo "QMP socket: $(QMP_SOCK); SeaBIOS's log: $(BUILD)/seabios.log"
	$(FERROVM) -accel kvm -machine q35 -m 256 -nodefaults -display none -serial stdio \
	  -qmp unix:$(QMP_SOCK),server=on,wait=off -debugcon file:$(BUILD)/seabios.log \
	  -global isa-debugcon.iobase=0x402 -drive if=virtio,file=$(BUILD)/bootdisk.img,format=raw

test: build lint unit integration iotests-subset

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit:
	$(CARGO) test --workspace --locked

integration:
	FERROVM=$(abspath $(FERROVM)) TESTGUEST=$(GUEST) $(PY) -m pytest -q tests

bench: build
	FERROVM=$(abspath $(FERROVM)) TESTGUEST=$(GUEST) $(PY) tests/bench/bench.py

linux: build
	scripts/linux.sh

# QEMU 7.2's block-job iotests (030 stream, 040 commit, 041 mirror, 056 backup),
# fetched from Debian's qemu source package into build/qemu-src at the first run
# (docs/iotests.md). QEMU_PROG=/usr/bin/qemu-system-x86_64 runs them against QEMU.
# IOTESTS picks tests, IOTESTS_CASES cases ("041:TestSingleDrive.test_cancel 030:TestEIO");
# failures are reported, not fatal, unless IOTESTS_STRICT=1.
IOTESTS         ?= 030 040 041 056
IOTESTS_CASES   ?=
IOTESTS_TIMEOUT ?= 900
IOTESTS_STRICT  ?=
QEMU_PROG       ?= $(abspath $(FERROVM))
IOTESTS_RUN = IOTESTS="$(IOTESTS)" IOTESTS_TIMEOUT="$(IOTESTS_TIMEOUT)" QEMU_PROG="$(QEMU_PROG)" \
  python3 tests/iotests/run.py
iotests: build
	IOTESTS_CASES="$(IOTESTS_CASES)" IOTESTS_STRICT="$(IOTESTS_STRICT)" $(IOTESTS_RUN)

# The iotests cases `make test` runs (about a minute), as TEST:Class[.method]
# selectors: every class ferrovm passes whole, today all 36 classes of the four
# tests. A failing case fails `make test`.
IOTESTS_SUBSET := \
  030:TestSingleDrive 030:TestSmallerBackingFile 030:TestEIO 030:TestENOSPC \
  030:TestStreamStop 030:TestSetSpeed 030:TestParallelOps 030:TestQuorum \
  040:TestSingleDrive 040:TestRelativePaths 040:TestSetSpeed 040:TestActiveZeroLengthImage \
  040:TestReopenOverlay 040:TestErrorHandling 040:TestCommitWithOverriddenBacking \
  040:TestCommitWithFilters \
  041:TestSingleDrive 041:TestSingleDriveZeroLength 041:TestSingleDriveUnalignedLength \
  041:TestSingleBlockdev 041:TestSingleBlockdevZeroLength 041:TestSingleBlockdevUnalignedLength \
  041:TestMirrorNoBacking 041:TestMirrorResized \
  041:TestReadErrors 041:TestWriteErrors 041:TestSetSpeed 041:TestUnbackedSource 041:TestGranularity \
  041:TestFilters 041:TestOrphanedSource 041:TestReplaces 041:TestRepairQuorum \
  056:TestSyncModesNoneAndTop 056:TestBeforeWriteNotifier 056:BackupTest
iotests-subset: build
	@test -n "$(strip $(IOTESTS_SUBSET))" || { echo "iotests-subset: IOTESTS_SUBSET is empty (Makefile)" >&2; exit 1; }
	IOTESTS_CASES="$(IOTESTS_SUBSET)" IOTESTS_STRICT=1 $(IOTESTS_RUN)

clean:
	$(CARGO) clean
	rm -rf $(BUILD)

# docs/qmp.md and docs/cli.md are generated from the QMP schema and the option table.
docs:
	$(CARGO) run -q -p qmp --example qmp_schema table > docs/qmp.md
	$(CARGO) run -q -p cli --example parse -- --md > docs/cli.md

# Fuzzes every parser for FUZZ_SECONDS each (cargo-fuzz, nightly toolchain).
FUZZ_SECONDS ?= 60
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && for t in json_stream session cli kernel_image virtio_blk_request virtio_pci_regs firmware_devices virtio_balloon virtio_net watchdog_pvpanic qcow2 blkdebug_config nbd_server; do \
	  cargo +nightly fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096 || exit 1; done
