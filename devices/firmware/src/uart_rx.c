/* Interrupt-driven receive ring shared by all boards (the contract is in board.h).
 *
 * Single producer (the UART interrupt) and single consumer (the main loop): head and tail are
 * free-running counters, each written by one side only, so no lock is needed. When the ring is
 * full the interrupt is masked in the NVIC and the bytes stay in the UART; uart_getc()
 * unmasks it and sets it pending once it has made room, so the handler drains what the UART
 * held. The protocol keeps the host within the ring (one request, at most MAX_RX + 11 bytes,
 * plus one small PING) so a full ring only happens when the host breaks that rule. */
#include "board.h"

#ifndef RX_RING_SIZE
#define RX_RING_SIZE 512u
#endif
_Static_assert((RX_RING_SIZE & (RX_RING_SIZE - 1u)) == 0, "RX_RING_SIZE must be a power of 2");

static volatile uint8_t ring[RX_RING_SIZE];
static volatile uint32_t head, tail;   /* head: written by the ISR; tail: by uart_getc */
static volatile uint8_t stalled;
static volatile uint32_t overruns;

#define UART_IRQ_BIT (1u << (UART_IRQN & 31))

int rx_ring_full(void) { return head - tail >= RX_RING_SIZE; }

void rx_ring_put(uint8_t c)
{
    ring[head & (RX_RING_SIZE - 1u)] = c;
    __asm volatile ("" ::: "memory");  /* the byte is stored before the consumer sees head */
    head = head + 1u;
}

void rx_ring_stall(void)
{
    NVIC_ICER = UART_IRQ_BIT;
    stalled = 1;
}

void rx_ring_overrun(void) { overruns = overruns + 1u; }
uint32_t rx_ring_overruns(void) { return overruns; }
uint32_t rx_ring_size(void) { return RX_RING_SIZE; }

uint8_t uart_getc(void)
{
    /* sleep until a byte is there: with interrupts masked, WFI still wakes on a pending one,
     * so a byte that lands between the test and the WFI cannot be slept through */
    __asm volatile ("cpsid i" ::: "memory");
    while (head == tail) {
        __asm volatile ("wfi\n cpsie i\n isb\n cpsid i" ::: "memory");
    }
    __asm volatile ("cpsie i" ::: "memory");
    uint8_t c = ring[tail & (RX_RING_SIZE - 1u)];
    tail = tail + 1u;
    if (stalled) {                     /* room again: let the handler drain the UART */
        stalled = 0;
        NVIC_ISER = UART_IRQ_BIT;
        NVIC_ISPR = UART_IRQ_BIT;
    }
    return c;
}
