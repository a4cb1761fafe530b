from firmware_interface.emulator.serve import main

main()
