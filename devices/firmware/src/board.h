/* What each board provides (boards/<name>/board.c) and what the Makefile defines per board.
 * Per-board -D macros (boards/<name>/board.mk): BOARD_CPU, BOARD_CLOCK_HZ, BOARD_RAM_BYTES,
 * BOARD_FLASH_BYTES, ARENA_BYTES, TIMER_HZ, and TIMER_DWT (DWT CYCCNT) or SysTick otherwise. */
#pragma once
#include <stdint.h>

void board_init(void);            /* clocks, FPU, UART, timestamp GPIO */
void uart_putc(uint8_t c);        /* blocking */
uint8_t uart_getc(void);          /* blocking */
void board_ts_pin(int level);     /* energy timestamp edge (no-op on QEMU boards) */

void timer_init(void);
uint32_t timer_now(void);         /* free-running tick counter at TIMER_HZ */

#define REG32(addr) (*(volatile uint32_t *)(addr))
