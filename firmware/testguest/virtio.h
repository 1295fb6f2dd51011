/* ferrovm test guest: a small shared modern virtio-pci driver layer
 * (virtio 1.2 §4.1 PCI transport, §2.7 split virtqueues, §3.1.1 driver
 * initialization), polled only.  Used by virtio_net.c and virtio_balloon.c;
 * virtio_blk.c keeps its own older copy of the same logic. */
#ifndef TG_VIRTIO_H
#define TG_VIRTIO_H

#include "tg.h"

/* Rings and buffers of these drivers: a bump allocator over guest RAM
   [VDMA_BASE, VDMA_BASE + VDMA_SIZE), above virtio-blk's DMA region and
   checked against the memmap by virtio_dma_reset(). */
#define VDMA_BASE (DMA_BASE + DMA_SIZE)
#define VDMA_SIZE ((u64)0x400000)
int virtio_dma_reset(void);                 /* 0: the region is not RAM */
void *virtio_dma_alloc(u64 size, u64 align); /* zeroed; 0 when the region is used up */

#define VQ_MAX 256                          /* queue size the layer asks for at most */

#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2
#define VRING_AVAIL_F_NO_INTERRUPT 1
#define VRING_USED_F_NO_NOTIFY 1

struct vring_desc {
    u64 addr;
    u32 len;
    u16 flags, next;
};

struct vq {
    u16 index, size;
    struct vring_desc *desc;
    volatile u16 *avail;        /* flags, idx, ring[size], used_event */
    volatile u8 *used;          /* flags u16, idx u16, ring[size]{u32 id, u32 len}, avail_event */
    u16 free_head, nfree, last_used, avail_idx, kicked_idx;
    u64 notify;                 /* this queue's notify address */
    u64 kicks;                  /* notifications actually written */
};

struct vdev {
    const struct pci_fn *pci;
    u64 common, notify_base, isr, devcfg;
    u32 notify_mult, devcfg_len;
    u64 offered, features;
};

/* one buffer of a descriptor chain */
struct vbuf {
    u64 addr;
    u32 len;
};

#define VIRTIO_F_VERSION_1_BIT 32

/* The first function with vendor 0x1af4 and modern device ID `id` (0x1040 + type). */
const struct pci_fn *virtio_find(u16 id);
/* Maps the capabilities, resets, ACK|DRIVER, negotiates VERSION_1 | (offered & want),
   FEATURES_OK.  1: ready for queue setup; 0: `why` says what failed (status FAILED set). */
int virtio_start(struct vdev *d, const struct pci_fn *f, u64 want, char *why, size_t n);
/* Queue `index` with at most `max` entries, rings from the DMA allocator, no MSI-X
   vector, interrupts suppressed (VRING_AVAIL_F_NO_INTERRUPT), enabled. */
int virtio_queue(struct vdev *d, struct vq *q, u16 index, u16 max, char *why, size_t n);
int virtio_driver_ok(struct vdev *d, char *why, size_t n);
void virtio_reset(struct vdev *d);
u16 virtio_num_queues(struct vdev *d);

/* Device configuration (field widths as the spec gives them).  A consistent
   multi-field read loops until virtio_cfg_gen() reads the same before and after. */
u8 virtio_cfg_gen(struct vdev *d);
u8 virtio_cfg8(struct vdev *d, unsigned off);
u16 virtio_cfg16(struct vdev *d, unsigned off);
u32 virtio_cfg32(struct vdev *d, unsigned off);
void virtio_cfg_w32(struct vdev *d, unsigned off, u32 v);

/* Makes a chain of `nout` device-readable then `nin` device-writable buffers
   available (not yet published). Returns its head descriptor, -1 if it does not fit. */
int vq_add(struct vq *q, const struct vbuf *b, unsigned nout, unsigned nin);
/* Publishes the avail index; notifies unless the device set VRING_USED_F_NO_NOTIFY. */
void vq_kick(struct vq *q);
/* Takes one used entry: returns its head (its descriptors are free again) and
   the length the device wrote in *len; -1 if none (or a bad id from the device). */
int vq_reap(struct vq *q, u32 *len);
int vq_used_pending(const struct vq *q);

#endif
