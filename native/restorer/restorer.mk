# restorer/restorer.mk: rfork's freestanding restorer and the process-image
# fidelity programs (included from native/Makefile; paths relative to native/).
#
#   $(BUILD)/bin/rex-restore              the restorer (docs/RFORK.md)
#   $(BUILD)/test/migration/<name>        zdtm-style programs driven by test/migration/
#
# librex's dumper (src/dump.c) is built with the rest of librex.

RESTORER := $(BUILD)/bin/rex-restore
RESTORER_SRCS := restorer/restorer.c
RESTORER_DEPS := restorer/restorer.c restorer/restorer.lds src/rawsys.h src/image.h src/image_util.h src/image_cpu.h src/xsave.h

# Flags of the restorer, each for a reason:
#   -ffreestanding            no hosted libc: it runs before any libc could exist in its process
#   -fno-stack-protector      its fs base is 0 until ARCH_SET_FS, so a canary load would fault
#   -fno-pie / -no-pie        absolute addresses at 0x70000000 (restorer.lds), no relocation
#   -mgeneral-regs-only       its C code must not touch SSE/AVX: those registers are the image's,
#                             restored by XRSTOR, and nothing may clobber them afterwards
#   -fno-tree-loop-distribute-patterns  gcc would turn the loops in memcpy/memset into calls to themselves
#   -fno-asynchronous-unwind-tables -fno-unwind-tables  no .eh_frame: nothing unwinds it
#   -fcf-protection=none      no endbr64/IBT notes: the jump into the image is an indirect ret
#   -static -nostdlib         no loader and no libc to map: its only mappings are its two segments
#   -Wl,-T,restorer.lds       link at 0x70000000, two segments
#   -Wl,--build-id=none       no note section to place
#   -Wl,-z,noexecstack        the kernel's stack is not executable (it is unmapped anyway)
RESTORER_CFLAGS := -std=c11 $(WARN) -O2 -g -ffreestanding -fno-stack-protector -fno-pie -mgeneral-regs-only \
  -fno-tree-loop-distribute-patterns -fno-asynchronous-unwind-tables -fno-unwind-tables -fcf-protection=none
RESTORER_LDFLAGS := -static -nostdlib -no-pie -Wl,-T,restorer/restorer.lds -Wl,--build-id=none -Wl,-z,noexecstack

$(RESTORER): $(RESTORER_DEPS)
	@mkdir -p $(dir $@)
	$(CC) $(RESTORER_CFLAGS) $(RESTORER_LDFLAGS) -o $@ $(RESTORER_SRCS)

# Fidelity programs: ordinary PIE programs linked with librex.a (the dumper is
# part of librex). zdtm.h holds their pass/fail helpers.
MIGRATION_SRCS := $(wildcard test/migration/*.c)
MIGRATION_BINS := $(MIGRATION_SRCS:test/%.c=$(BUILD)/test/%)

# -O1: values must really live in registers and memory as the programs set them,
# without the optimiser folding the checks away after migration (they use volatile where it matters).
$(BUILD)/test/migration/%: test/migration/%.c test/migration/zdtm.h $(BUILD)/lib/librex.a
	@mkdir -p $(dir $@)
	$(CC) -std=c11 $(WARN) -O1 -g -Iinclude -o $@ $< $(BUILD)/lib/librex.a -lm

# The restorer's XSAVE converter (src/xsave.h) on cases from stdin, for test/migration/xsave-convert.test.ts.
XSAVE_CONV := $(BUILD)/test/rex_xsave_conv
$(XSAVE_CONV): test/xsave_conv.c src/xsave.h src/image.h src/image_util.h
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(OPT) -o $@ $<

.PHONY: restorer migration-tests xsave-conv
xsave-conv: $(XSAVE_CONV)
restorer: $(RESTORER)
migration-tests: $(MIGRATION_BINS)

# A quick round trip without node: dump a program, restore it, expect PASS.
restorer-check: $(RESTORER) $(BUILD)/test/migration/hello
	@rm -f $(BUILD)/test/migration/hello.img
	$(BUILD)/test/migration/hello $(BUILD)/test/migration/hello.img
	$(RESTORER) $(BUILD)/test/migration/hello.img | grep -q '^PASS hello'
	@rm -f $(BUILD)/test/migration/hello.img
	@echo "restorer-check: hello round trip passed"

all: restorer
test-programs: migration-tests $(XSAVE_CONV)
check: restorer-check
.PHONY: restorer-check
