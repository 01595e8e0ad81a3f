#!/bin/sh
# mount-volume.sh VOLUME_ID MOUNTPOINT
#
# Finds the instance's Cinder volume by its serial (the volume id, which the
# hypervisor exposes in /dev/disk/by-id: virtio keeps its first 20
# characters), makes an ext4 filesystem on it only if it has none (a volume
# that already holds data, e.g. after a rebuild, is never formatted), and
# mounts it at MOUNTPOINT, now and at every boot. Safe to run again.
set -eu
vol=$1
mnt=$2
short=$(printf %s "$vol" | cut -c1-20)
dev=""
i=0
# The volume is attached at boot, but udev may still be creating the links.
while [ "$i" -lt 300 ]; do
  for link in "/dev/disk/by-id/virtio-$short" /dev/disk/by-id/*"$vol" /dev/disk/by-id/*"$short"; do
    if [ -e "$link" ]; then
      dev=$(readlink -f "$link")
      break 2
    fi
  done
  sleep 1
  i=$((i + 1))
done
if [ -z "$dev" ]; then
  echo "coffer: volume $vol is not attached (no /dev/disk/by-id entry)" >&2
  exit 1
fi
if ! blkid -o value -s TYPE "$dev" >/dev/null 2>&1; then
  mkfs.ext4 -q -L coffer-data "$dev"
fi
uuid=$(blkid -o value -s UUID "$dev")
mkdir -p "$mnt"
if ! grep -q "^UUID=$uuid " /etc/fstab; then
  echo "UUID=$uuid $mnt ext4 defaults,nofail 0 2" >>/etc/fstab
fi
mountpoint -q "$mnt" || mount "$mnt"
