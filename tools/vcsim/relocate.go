package main

// Asynchronous, cancellable RelocateVM_Task.
//
// vSphere API reference (vim.Task, vim.TaskInfo, CancelTask):
//   - a task runs queued -> running -> success | error; TaskInfo.progress is
//     a percentage while it runs; TaskInfo.cancelable says "whether or not the
//     cancel task operation is supported", TaskInfo.cancelled "whether or not
//     the client requested cancellation";
//   - CancelTask "cancels a running or queued task.  A task may only be
//     canceled if it is cancelable.  Multiple cancel requests will be treated
//     as a single cancelation request.  Canceling a completed or already
//     canceled task will throw an InvalidState exception.  If a task is
//     canceled, its runtime state will be set to error and its error state
//     will be set to RequestCanceled.  A cancel operation is asynchronous."
//     Faults: NotSupported (the task is not cancelable), InvalidState.
//
// govmomi 0.24.2 runs a task to the end before RelocateVM_Task returns and
// has no CancelTask.  Here the relocation runs in the background for a
// configurable time with advancing info.progress; the VM moves (by the
// simulator's own VirtualMachine.RelocateVMTask) only if the task succeeds,
// so a cancelled or failed relocation leaves the VM where it was.

import (
	"math"
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

const tick = 50 * time.Millisecond

// relocation: how one RelocateVM_Task behaves.
type relocation struct {
	Duration         time.Duration // running time to 100 %; 0 = never ends by itself
	Cancelable       bool          // TaskInfo.cancelable
	CancelDelay      time.Duration // accepted CancelTask -> state error
	CompleteOnCancel bool          // once a cancel is accepted, finish before it takes effect
}

// extension holds the defaults, per-VM overrides and the tasks started.
type extension struct {
	mu       sync.Mutex
	defaults relocation
	next     map[string]relocation // VM moref value -> parameters of its next relocation
	tasks    map[string]*relocateTask
}

var ext *extension

// install wraps the model's VMs and its PropertyCollector; before NewServer.
func install(defaults relocation) *extension {
	ext = &extension{defaults: defaults, next: map[string]relocation{}, tasks: map[string]*relocateTask{}}
	for _, e := range simulator.Map.All("VirtualMachine") {
		vm := e.(*simulator.VirtualMachine)
		simulator.Map.Put(&migratingVM{VirtualMachine: *vm})
	}
	si := simulator.Map.Get(vim25.ServiceInstance).(*simulator.ServiceInstance)
	wrapped := &propertyCollector{}
	wrapped.Self = si.Content.PropertyCollector
	simulator.Map.Put(wrapped)
	return ext
}

func (x *extension) take(vm string) relocation {
	x.mu.Lock()
	defer x.mu.Unlock()
	p, ok := x.next[vm]
	if !ok {
		return x.defaults
	}
	delete(x.next, vm)
	return p
}

func (x *extension) task(ref string) *relocateTask {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.tasks[ref]
}

// migratingVM is the simulator's VirtualMachine with our RelocateVM_Task.
type migratingVM struct {
	simulator.VirtualMachine
}

// RelocateVMTask starts the relocation and returns its task at once.
// Unknown or mistyped references in the spec are refused with
// ManagedObjectNotFound / InvalidArgument before any task exists.
func (vm *migratingVM) RelocateVMTask(ctx *simulator.Context, req *types.RelocateVM_Task) soap.HasFault {
	body := &methods.RelocateVM_TaskBody{}
	for _, c := range []struct {
		ref  *types.ManagedObjectReference
		kind string
		prop string
	}{{req.Spec.Host, "HostSystem", "spec.host"}, {req.Spec.Pool, "ResourcePool", "spec.pool"},
		{req.Spec.Datastore, "Datastore", "spec.datastore"}, {req.Spec.Folder, "Folder", "spec.folder"}} {
		if c.ref == nil {
			continue
		}
		if ctx.Map.Get(*c.ref) == nil {
			body.Fault_ = simulator.Fault("", &types.ManagedObjectNotFound{Obj: *c.ref})
			return body
		}
		if c.ref.Type != c.kind {
			body.Fault_ = simulator.Fault("", &types.InvalidArgument{InvalidProperty: c.prop})
			return body
		}
	}
	task := simulator.CreateTask(vm, "relocateVm", nil)
	t := &relocateTask{Task: *task, vm: vm, req: req, ctx: ctx, p: ext.take(vm.Self.Value)}
	simulator.Map.Put(t)
	ext.mu.Lock()
	ext.tasks[t.Self.Value] = t
	ext.mu.Unlock()
	go t.run()
	body.Res = &types.RelocateVM_TaskResponse{Returnval: t.Self}
	return body
}

// relocateTask is the simulator's Task with a life of its own and CancelTask.
// Its fields are guarded by the registry's lock of the task object, the one
// the simulator holds while it dispatches a method on the task or collects
// its properties.
type relocateTask struct {
	simulator.Task

	vm  *migratingVM
	req *types.RelocateVM_Task
	ctx *simulator.Context
	p   relocation

	base, rate  float64   // progress fraction at baseAt, gained per second
	baseAt      time.Time // when base was taken
	cancelAt    time.Time // when an accepted cancel takes effect (zero: none)
	failWith    types.BaseMethodFault
	cancelCalls int
	finished    bool
}

func (t *relocateTask) fraction(now time.Time) float64 {
	if t.rate == 0 { // never converges: creep towards 90 %
		return 0.9 * (1 - math.Exp(-now.Sub(t.baseAt).Seconds()/10))
	}
	return math.Min(1, t.base+now.Sub(t.baseAt).Seconds()*t.rate)
}

func (t *relocateTask) run() {
	simulator.Map.WithLock(t, func() {
		t.baseAt = time.Now()
		if t.p.Duration > 0 {
			t.rate = 1 / t.p.Duration.Seconds()
		}
		simulator.Map.Update(t, []types.PropertyChange{
			{Name: "info.startTime", Val: t.baseAt},
			{Name: "info.state", Val: types.TaskInfoStateRunning},
			{Name: "info.cancelable", Val: t.p.Cancelable},
			{Name: "info.progress", Val: int32(0)},
		})
	})
	for {
		time.Sleep(tick)
		var outcome string
		simulator.Map.WithLock(t, func() {
			now := time.Now()
			frac := t.fraction(now)
			switch {
			case t.failWith != nil:
				outcome = "error"
			case frac >= 1:
				outcome = "success"
			case !t.cancelAt.IsZero() && !now.Before(t.cancelAt):
				outcome = "cancelled"
			default:
				simulator.Map.Update(t, []types.PropertyChange{
					{Name: "info.progress", Val: int32(frac * 100)}})
			}
		})
		if outcome != "" {
			t.finish(outcome)
			return
		}
	}
}

func (t *relocateTask) finish(outcome string) {
	if outcome == "success" {
		// The simulator's own relocation: datastore, resourcePool,
		// runtime.host and summary.runtime.host of the VM.
		simulator.Map.WithLock(t.vm, func() { t.vm.VirtualMachine.RelocateVMTask(t.ctx, t.req) })
	}
	simulator.Map.WithLock(t, func() {
		changes := []types.PropertyChange{
			{Name: "info.completeTime", Val: time.Now()},
			{Name: "info.cancelable", Val: false},
		}
		switch outcome {
		case "success":
			changes = append(changes, types.PropertyChange{Name: "info.progress", Val: int32(100)},
				types.PropertyChange{Name: "info.state", Val: types.TaskInfoStateSuccess})
		case "cancelled":
			changes = append(changes, types.PropertyChange{Name: "info.state", Val: types.TaskInfoStateError},
				types.PropertyChange{Name: "info.error", Val: types.LocalizedMethodFault{
					Fault: &types.RequestCanceled{}, LocalizedMessage: "The task was canceled by a user."}})
		default:
			changes = append(changes, types.PropertyChange{Name: "info.state", Val: types.TaskInfoStateError},
				types.PropertyChange{Name: "info.error", Val: types.LocalizedMethodFault{
					Fault: t.failWith, LocalizedMessage: "The migration failed."}})
		}
		simulator.Map.Update(t, changes)
		t.finished = true
	})
}

// CancelTask: InvalidState once finished, NotSupported when not cancelable,
// else accepted (a second one changes nothing); it takes effect after
// CancelDelay.
func (t *relocateTask) CancelTask(ctx *simulator.Context, req *types.CancelTask) soap.HasFault {
	body := &methods.CancelTaskBody{}
	t.cancelCalls++
	switch {
	case t.finished || t.Info.State == types.TaskInfoStateSuccess || t.Info.State == types.TaskInfoStateError:
		body.Fault_ = simulator.Fault("The operation is not allowed in the current state.", &types.InvalidState{})
		return body
	case !t.p.Cancelable:
		body.Fault_ = simulator.Fault("The operation is not supported on the object.", &types.NotSupported{})
		return body
	case t.cancelAt.IsZero():
		now := time.Now()
		t.cancelAt = now.Add(t.p.CancelDelay)
		if t.p.CompleteOnCancel {
			t.base, t.baseAt = t.fraction(now), now
			t.rate = (1 - t.base) / 0.3
			if t.cancelAt.Before(now.Add(time.Second)) {
				t.cancelAt = now.Add(time.Second)
			}
		}
		simulator.Map.Update(t, []types.PropertyChange{{Name: "info.cancelled", Val: true}})
	}
	body.Res = &types.CancelTaskResponse{}
	return body
}
