# The ground truth of the hostile-pod tests: every frame that reaches the server namespace's
# eth0, printed as one line of hex, flushed at once. Run inside the server's namespace.
import socket
import sys

s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.bind(("eth0", 0))
print("capturing", flush=True)
while True:
    data, addr = s.recvfrom(65535)
    # Frames the server sends (PACKET_OUTGOING = 4) are not evidence of what reached it.
    if addr[2] == 4:
        continue
    sys.stdout.write(data.hex() + "\n")
    sys.stdout.flush()
