#!/usr/bin/env bash
# Post-build script (BR2_ROOTFS_POST_BUILD_SCRIPT): make the target tree
# the recovery image scripts/build-image assembles from Debian: rewind as
# /init (and as modprobe), the preload list, every program of image/tools,
# busybox for the emergency shell without the applets rewind replaces.
#
#   post-build.sh TARGET_DIR
set -euo pipefail

target=$1
image=${BR2_EXTERNAL_REWIND_PATH:?run by Buildroot with BR2_EXTERNAL}/../image

die() { echo "rewind post-build: error: $*" >&2; exit 1; }
say() { echo "rewind post-build: $*"; }
# One setting a line, comments and blank lines dropped.
settings() { sed -e 's/#.*//' -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' "$1" | grep -v '^$' || true; }

# ---- rewind: PID 1, and what the kernel runs as /sbin/modprobe
[ -x "$target/usr/bin/rewind" ] || die "$target/usr/bin/rewind missing (BR2_PACKAGE_REWIND)"
if [ ! -L "$target/usr/bin/rewind" ]; then
	mv "$target/usr/bin/rewind" "$target/init"
fi
chmod 0755 "$target/init"
# Relative links: on the build host they stay inside TARGET_DIR (a package
# reinstalled over them writes there, never to the host's /init).
pid1=../../init
ln -sf "$pid1" "$target/usr/bin/rewind"
# Busybox's module tools and init would shadow rewind's.
for applet in init linuxrc modprobe insmod rmmod depmod modinfo lsmod; do
	for dir in "$target" "$target/usr/bin" "$target/usr/sbin"; do
		if [ -L "$dir/$applet" ] && [ "$(readlink "$dir/$applet")" != "$pid1" ]; then
			rm -f "$dir/$applet"
		fi
	done
done
ln -sf "$pid1" "$target/usr/sbin/modprobe"

settings "$image/preload" > "$target/etc/rewind-preload"
mkdir -p "$target/target" "$target/run" "$target/root"

# ---- the programs of image/tools, and the links it names
missing=()
while read -r line; do
	case "$line" in
	*" -> "*)
		name=${line%% -> *}
		to=${line##* -> }
		for dir in usr/sbin usr/bin; do
			if [ -e "$target/$dir/$to" ]; then
				[ -e "$target/$dir/$name" ] || ln -s "$to" "$target/$dir/$name"
				continue 2
			fi
		done
		missing+=("$to (for $name)")
		;;
	*)
		[ -e "$target/usr/sbin/$line" ] || [ -e "$target/usr/bin/$line" ] \
			|| missing+=("$line")
		;;
	esac
done < <(settings "$image/tools")
if [ "${#missing[@]}" -gt 0 ]; then
	die "image/tools lists programs this build lacks: ${missing[*]} (enable their packages in the defconfig)"
fi
while read -r file; do
	[ -e "$target/$file" ] || say "warning: image/etc-files: $file missing from the target"
done < <(settings "$image/etc-files")

# ---- os-release: what the console and `rewind status` show
kver=$(find "$target/lib/modules/" -mindepth 1 -maxdepth 1 -printf "%f\n" 2>/dev/null | head -n 1)
version=$("$target/init" --version 2>/dev/null || echo rewind)
cat > "$target/etc/os-release" <<EOT
NAME="rewind recovery image"
ID=rewind
PRETTY_NAME="rewind recovery image (${version}, kernel ${kver:-unknown}, Buildroot)"
EOT
say "/init is rewind (${version}); kernel ${kver:-unknown}"
