#!/usr/bin/env python3
"""PostgreSQL's CPU seconds so far: its live processes, and the backends it reaped (the
postmaster's children's time). Usage: pg-cpu.py DATA_DIR/postmaster.pid"""
import os, pwd, sys
uid = pwd.getpwnam("postgres").pw_uid
master = int(open(sys.argv[1]).readline())
total = 0
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        if os.stat(f"/proc/{pid}").st_uid != uid:
            continue
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    total += int(fields[11]) + int(fields[12])
    if int(pid) == master:
        total += int(fields[13]) + int(fields[14])
print(total / os.sysconf("SC_CLK_TCK"))
