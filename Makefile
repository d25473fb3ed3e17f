# ferry: build, test and demo.  `make` builds build/ferry and the guest
# images; `make test` runs every test, then again under ASan+UBSan;
# `make demo` runs the main job.  All of them install missing Debian
# packages first (scripts/deps.sh).

BUILD    ?= build
CC       ?= gcc
SAN      ?=
V        ?=

WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
            -Wmissing-prototypes -Wpointer-arith -Wformat=2 -Wundef
CFLAGS   := -std=gnu11 $(WARN) -g -O2 -D_GNU_SOURCE -I. -pthread
LDLIBS   := -pthread -ljansson -lzstd -lxxhash -luring
ifeq ($(SAN),1)
CFLAGS   += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer \
            -fno-sanitize-recover=all
LDFLAGS  += -fsanitize=address,undefined
endif

# Guest images: freestanding, static, linked at the image address.
GUEST_CFLAGS := -std=gnu11 $(WARN) -O2 -g -ffreestanding -fno-pic -fno-pie \
            -fno-stack-protector -fno-asynchronous-unwind-tables \
            -mno-red-zone -mcmodel=small -fcf-protection=none -I.
GUEST_LDFLAGS := -nostdlib -static -no-pie -Wl,-T,guest/rt/guest.ld \
            -Wl,--build-id=none -Wl,-z,max-page-size=4096 -Wl,-z,noexecstack

LIB_SRCS := $(wildcard core/*.c dirtylog/*.c migrate/*.c transport/*.c vsp/*.c) \
            $(filter-out cli/main.c,$(wildcard cli/*.c))
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
MAIN_OBJ := $(BUILD)/obj/cli/main.o
UNIT_SRCS := $(wildcard tests/unit/*.c)
UNIT_OBJS := $(UNIT_SRCS:%.c=$(BUILD)/obj/%.o)
GUEST_PROGS := $(basename $(notdir $(wildcard guest/progs/*.c)))
GUEST_RT := $(BUILD)/guest/rt/start.o $(BUILD)/guest/rt/lib.o $(BUILD)/guest/rt/fmt.o \
            $(BUILD)/guest/rt/vmbus.o $(BUILD)/guest/rt/vsc.o
GUEST_IMGS := $(GUEST_PROGS:%=$(BUILD)/guest/%.elf)
# The boot-sector guest of `ferry bench --qemu` (guest/qemu/bootsect.S).
QEMU_GUEST := $(BUILD)/guest/qemu/bootsect.bin
BENCH_SRCS := $(wildcard bench/*.c)
BENCHES  := $(BENCH_SRCS:bench/%.c=$(BUILD)/bench/%)
DEPS_STAMP := build/.deps-installed

ifeq ($(V),)
Q := @
endif

.SECONDARY:
.PHONY: all deps check test asan-test demo clean bench
all: $(BUILD)/ferry $(GUEST_IMGS) $(BENCHES) $(QEMU_GUEST)

deps: $(DEPS_STAMP)
$(DEPS_STAMP): scripts/deps.sh
	$(Q)scripts/deps.sh
	$(Q)mkdir -p $(dir $@) && touch $@

$(BUILD)/obj/%.o: %.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libferry.a: $(LIB_OBJS)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/ferry: $(MAIN_OBJ) $(BUILD)/libferry.a
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/guest/rt/%.o: guest/rt/%.c
	@mkdir -p $(dir $@)
	@echo "  GUESTCC $<"
	$(Q)$(CC) $(GUEST_CFLAGS) -MMD -MP -c $< -o $@
$(BUILD)/guest/rt/%.o: guest/rt/%.S
	@mkdir -p $(dir $@)
	@echo "  GUESTAS $<"
	$(Q)$(CC) $(GUEST_CFLAGS) -MMD -MP -c $< -o $@
$(BUILD)/guest/progs/%.o: guest/progs/%.c
	@mkdir -p $(dir $@)
	@echo "  GUESTCC $<"
	$(Q)$(CC) $(GUEST_CFLAGS) -MMD -MP -c $< -o $@
$(BUILD)/guest/%.elf: $(BUILD)/guest/progs/%.o $(GUEST_RT) guest/rt/guest.ld
	@echo "  GUESTLD $@"
	$(Q)$(CC) $(GUEST_CFLAGS) $(GUEST_LDFLAGS) -o $@ $< $(GUEST_RT)

$(QEMU_GUEST): guest/qemu/bootsect.S
	@mkdir -p $(dir $@)
	@echo "  GUESTAS $<"
	$(Q)$(CC) -c $< -o $(@:.bin=.o)
	$(Q)ld -m elf_x86_64 -Ttext=0x7c00 --oformat=binary -e _start -o $@ $(@:.bin=.o)

$(BUILD)/unit-tests: $(UNIT_OBJS) $(BUILD)/libferry.a
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ -lcriterion $(LDLIBS)

$(BUILD)/tests/%: tests/tools/%.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $<

TEST_TOOLS := $(BUILD)/tests/ctl_abuse $(BUILD)/tests/mig_proxy

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(BUILD)/libferry.a
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The unit tests and the end-to-end tests, on this build.
check: all $(BUILD)/unit-tests $(TEST_TOOLS)
	FERRY_GUEST_DIR=$(BUILD)/guest $(BUILD)/unit-tests --jobs 2
	FERRY=$(BUILD)/ferry TOOLS=$(BUILD)/tests tests/e2e/run.sh

test: deps
	$(MAKE) check
	$(MAKE) asan-test

asan-test: deps
	$(MAKE) BUILD=build-asan SAN=1 check

# The live-migration benchmark, --quick (docs/benchmarks.md); under the
# machine's benchmark lock so that no test run shares the cores with it.
bench: deps
	$(MAKE) all
	flock -x /tmp/ferry-cpu.lock $(BUILD)/ferry bench --quick --out $(BUILD)/bench-results

demo: deps
	$(MAKE) all
	scripts/demo.sh

clean:
	rm -rf build build-asan

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
