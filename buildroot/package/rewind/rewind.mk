################################################################################
#
# rewind
#
################################################################################

# The crate is the checkout this br2-external tree lives in.
REWIND_VERSION = $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' \
	$(BR2_EXTERNAL_REWIND_PATH)/../Cargo.toml | head -n 1)
REWIND_SITE = $(BR2_EXTERNAL_REWIND_PATH)/..
REWIND_SITE_METHOD = local
# Not the host build tree (gigabytes) nor this br2-external tree.
REWIND_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--exclude /target --exclude /buildroot

# A local source is not vendored by the download step: vendor the
# crates of Cargo.lock into the build directory before building, the
# way support/download/cargo-post-process does for downloaded crates.
# The registry cache stays in $(BR_CARGO_HOME) (in DL_DIR), so a
# rebuild needs no network.
define REWIND_VENDOR_CRATES
	if [ ! -d $(@D)/VENDOR ]; then \
		mkdir -p $(@D)/.cargo $(BR_CARGO_HOME) && \
		cd $(@D) && \
		$(HOST_MAKE_ENV) CARGO_HOME=$(BR_CARGO_HOME) \
		flock $(BR_CARGO_HOME)/.br-lock \
		cargo vendor --locked VENDOR > .cargo/config.toml.tmp && \
		mv .cargo/config.toml.tmp .cargo/config.toml; \
	fi
endef
REWIND_PRE_CONFIGURE_HOOKS += REWIND_VENDOR_CRATES

# PID 1 of the image: a static executable, built like Cargo.toml's
# release profile (one codegen unit, LTO) whatever the global
# Buildroot optimisation settings are.
REWIND_CARGO_ENV = \
	CARGO_TARGET_$(call UPPERCASE,$(RUSTC_TARGET_NAME))_RUSTFLAGS="-C target-feature=+crt-static" \
	CARGO_PROFILE_RELEASE_OPT_LEVEL="3" \
	CARGO_PROFILE_RELEASE_LTO="true" \
	CARGO_PROFILE_RELEASE_CODEGEN_UNITS="1"

define REWIND_CHECK_STATIC
	if $(TARGET_READELF) -l $(TARGET_DIR)/usr/bin/rewind | \
		grep -q 'program interpreter'; then \
		echo "rewind: $(TARGET_DIR)/usr/bin/rewind is not static" >&2; \
		exit 1; \
	fi
endef
REWIND_POST_INSTALL_TARGET_HOOKS += REWIND_CHECK_STATIC

$(eval $(cargo-package))
