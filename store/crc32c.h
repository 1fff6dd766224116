/*
 * CRC-32C (Castagnoli, the polynomial 0x1EDC6F41, reflected 0x82F63B78), as iSCSI, ext4
 * and most write-ahead logs use it: it guards every record of the write-ahead log
 * (store/wal.h) against torn and corrupted writes.
 *
 * crc32c() runs the SSE 4.2 crc32 instruction (8 bytes a step) when the CPU has it and a
 * table-driven loop otherwise; both give the same value, which the tests check against
 * the standard check value crc32c("123456789") = 0xE3069283 and against each other.
 */
#ifndef RINGPAY_STORE_CRC32C_H
#define RINGPAY_STORE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* The CRC-32C of data[0..len), continuing from crc (0 to start). */
uint32_t crc32c(uint32_t crc, const void *data, size_t len);

/* The table-driven implementation alone (for tests and CPUs without SSE 4.2). */
uint32_t crc32c_soft(uint32_t crc, const void *data, size_t len);

#endif
