/* What each board provides (boards/<name>/board.c) and what the Makefile defines per board.
 * Per-board -D macros (boards/<name>/board.mk): BOARD_CPU, BOARD_CLOCK_HZ, BOARD_RAM_BYTES,
 * BOARD_FLASH_BYTES, TIMER_HZ, TIMER_DWT (DWT CYCCNT) or SysTick otherwise, UART_IRQN (the
 * NVIC interrupt of the board's UART) and optionally RX_RING_SIZE; UART_BAUD from make BAUD=. */
#pragma once
#include <stdint.h>

#ifndef UART_BAUD
#define UART_BAUD 115200
#endif

void board_init(void);            /* clocks, FPU, UART (RX interrupt on), timestamp GPIO */
void uart_putc(uint8_t c);        /* blocking */
void board_ts_pin(int level);     /* energy timestamp edge (no-op on QEMU boards) */

/* Receiving (src/uart_rx.c): the board's UART interrupt handler moves every received byte into
 * a ring buffer, so bytes that arrive while the core computes or transmits wait there instead
 * of overrunning the UART. The handler, per board:
 *     clear the RX event/flag; note an overrun with rx_ring_overrun();
 *     while (a byte is held) { if (rx_ring_full()) { rx_ring_stall(); return; }
 *                              rx_ring_put(byte); }
 * A full ring leaves bytes in the UART (flow control: QEMU then holds them on its side; a real
 * UART overruns, which is counted) and masks the interrupt until uart_getc() makes room. */
void board_uart_isr(void);        /* placed at vector 16 + UART_IRQN by src/startup.c */
int rx_ring_full(void);
void rx_ring_put(uint8_t c);
void rx_ring_stall(void);
void rx_ring_overrun(void);
uint8_t uart_getc(void);          /* next received byte; sleeps (WFI) while none is there */
uint32_t rx_ring_size(void);
uint32_t rx_ring_overruns(void);  /* bytes the UART hardware lost (reported in HELLO) */

void timer_init(void);
uint32_t timer_now(void);         /* free-running tick counter at TIMER_HZ */

#define REG32(addr) (*(volatile uint32_t *)(addr))
#define NVIC_ISER REG32(0xE000E100u)
#define NVIC_ICER REG32(0xE000E180u)
#define NVIC_ISPR REG32(0xE000E200u)
