#!/usr/bin/env bash
# Post-image script (BR2_ROOTFS_POST_IMAGE_SCRIPT): the outputs of
# scripts/build-image, in BINARIES_DIR: vmlinuz, initrd.img (zstd cpio),
# kernel-version, pxe/ (what `rewind serve` serves from DATA/boot/) and
# rewind.iso, a hybrid BIOS/UEFI ISO that also boots written to a USB
# stick, with image/grub.cfg's menu. The ISO is laid out as grub-mkrescue
# lays it out, from the GRUB Buildroot built (BR2_TARGET_GRUB2_I386_PC,
# BR2_TARGET_GRUB2_X86_64_EFI) and host xorriso, mtools and dosfstools.
#
#   post-image.sh BINARIES_DIR
# Environment: REWIND_CMDLINE, kernel arguments added to the ISO's entries
# (scripts/build-image --cmdline), e.g. "rewind.server=https://backup:8443".
set -euo pipefail

out=$1
image=${BR2_EXTERNAL_REWIND_PATH:?run by Buildroot with BR2_EXTERNAL}/../image
cmdline_extra=${REWIND_CMDLINE:-}

die() { echo "rewind post-image: error: $*" >&2; exit 1; }
say() { echo "rewind post-image: $*"; }
# One setting a line, comments dropped, joined with spaces.
join_lines() { sed -e 's/#.*//' "$1" | tr '\n' ' ' | sed 's/[[:space:]][[:space:]]*/ /g; s/^ //; s/ $//'; }

[ -f "$out/bzImage" ] || die "$out/bzImage missing (BR2_LINUX_KERNEL_BZIMAGE)"
[ -f "$out/rootfs.cpio.zst" ] || die "$out/rootfs.cpio.zst missing (BR2_TARGET_ROOTFS_CPIO_ZSTD)"
cp "$out/bzImage" "$out/vmlinuz"
cp "$out/rootfs.cpio.zst" "$out/initrd.img"
find "$TARGET_DIR/lib/modules/" -mindepth 1 -maxdepth 1 -printf "%f\n" | head -n 1 > "$out/kernel-version"

mkdir -p "$out/pxe"
cp "$out/vmlinuz" "$out/initrd.img" "$out/pxe/"
join_lines "$image/cmdline" > "$out/pxe/cmdline"

# ---- the ISO
grub_pc=$(echo "$BUILD_DIR"/grub2-*/build-i386-pc/grub-core)
grub_efi=$(echo "$BUILD_DIR"/grub2-*/build-x86_64-efi/grub-core)
[ -f "$grub_pc/boot_hybrid.img" ] || die "no i386-pc GRUB in $BUILD_DIR (BR2_TARGET_GRUB2_I386_PC)"
[ -d "$grub_efi" ] || die "no x86_64-efi GRUB in $BUILD_DIR (BR2_TARGET_GRUB2_X86_64_EFI)"

args=$(join_lines "$image/cmdline")
[ -n "$cmdline_extra" ] && args="$args $cmdline_extra"
case "$args" in
*'|'* | *'&'*) die "REWIND_CMDLINE: '|' and '&' cannot be on a kernel command line here" ;;
esac

tree=$(mktemp -d "$BUILD_DIR/rewind-iso.XXXXXX")
trap 'rm -rf "$tree"' EXIT
mkdir -p "$tree/boot/grub" "$tree/.disk"
cp "$out/vmlinuz" "$out/initrd.img" "$tree/boot/"
sed -e "s|@ARGS@|$args|g" "$image/grub.cfg" > "$tree/boot/grub/grub.cfg"
echo "rewind recovery image" > "$tree/.disk/info"
# GRUB finds the medium by this file, on a CD and on a USB stick alike.
marker=.disk/rewind-$(sha256sum "$out/initrd.img" | cut -c1-16)
touch "$tree/$marker"
cat > "$tree/early.cfg" <<EOT
search --no-floppy --set=root --file /$marker
set prefix=(\$root)/boot/grub
configfile (\$root)/boot/grub/grub.cfg
EOT
modules="iso9660 fat part_msdos part_gpt search search_fs_file configfile
	normal linux echo test serial terminal"
# shellcheck disable=SC2086 # word splitting of the module list is wanted
"$HOST_DIR/bin/grub-mkimage" -d "$grub_pc" -O i386-pc-eltorito \
	-p /boot/grub -c "$tree/early.cfg" -o "$tree/boot/grub/eltorito.img" \
	biosdisk $modules
# shellcheck disable=SC2086
"$HOST_DIR/bin/grub-mkimage" -d "$grub_efi" -O x86_64-efi \
	-p /boot/grub -c "$tree/early.cfg" -o "$tree/bootx64.efi" \
	all_video $modules
rm "$tree/early.cfg"
dd if=/dev/zero of="$tree/efi.img" bs=1M count=8 status=none
"$HOST_DIR/sbin/mkfs.vfat" -n REWIND-EFI "$tree/efi.img" >/dev/null
"$HOST_DIR/bin/mmd" -i "$tree/efi.img" ::/EFI ::/EFI/BOOT
"$HOST_DIR/bin/mcopy" -i "$tree/efi.img" "$tree/bootx64.efi" ::/EFI/BOOT/BOOTX64.EFI
rm "$tree/bootx64.efi"

# El Torito for BIOS and UEFI, GRUB's hybrid MBR and a protective label:
# the arguments grub-mkrescue passes to xorriso.
"$HOST_DIR/bin/xorriso" -as mkisofs -graft-points -R -J -V REWIND \
	-b boot/grub/eltorito.img -no-emul-boot -boot-load-size 4 \
	-boot-info-table --grub2-boot-info --grub2-mbr "$grub_pc/boot_hybrid.img" \
	-apm-block-size 2048 \
	--efi-boot efi.img -efi-boot-part --efi-boot-image \
	--protective-msdos-label \
	-o "$out/rewind.iso.tmp" "$tree" 2>"$BUILD_DIR/rewind-xorriso.log" \
	|| { cat "$BUILD_DIR/rewind-xorriso.log" >&2; die "xorriso failed"; }
mv "$out/rewind.iso.tmp" "$out/rewind.iso"
say "$out: vmlinuz, initrd.img, pxe/, rewind.iso ($(du -h "$out/rewind.iso" | cut -f1))"
