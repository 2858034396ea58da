//! The optimizer masklm trains with: AdamW's moments of every parameter, and one
//! [`adamw_updates`] for all parameters a step.
//!
//! burn's `ModuleOptimizer` calls its optimizer once per parameter with that parameter's state,
//! so every update it makes is an operation of its own for the device. Here a step takes every
//! parameter that has a gradient out of the model (a `ModuleMapper`, leaving a placeholder that
//! is never initialised), updates them all in one operation, and puts the new values back (a
//! second mapper), restoring what autodiff needs (`require_grad`, the checkpointing strategy) as
//! `ModuleOptimizer` does. The update consumes each parameter's last handle, so a GPU updates it
//! in place.
//!
//! Checkpoints keep burn's optimizer record (`optimizer.bpk`: `AdamWState` per parameter id,
//! with its module path): saving steps a `ModuleOptimizer` once through a `Bridge` optimizer
//! that hands it these moments, and loading steps one through a bridge that takes them out.
//! Weight decay follows BERT's groups (`optim::NO_DECAY`), matched as burn's `ParamGroup`
//! matches them.

use super::adamw::{AdamW, AdamWCoefficients, Update, adamw_updates};
use burn::backend::DispatchTensor;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamGroup, ParamId, ParamMapper};
use burn::optim::{
    AdamWState, AdaptiveMomentumState, GradientsParams, LearningRate, ModuleOptimizer, Optimizer,
};
use burn::prelude::*;
use burn::tensor::GradientCheckpointingStrategy;
use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// One parameter's AdamW state: both moments (its shape, f32) and the number of updates made.
#[derive(Debug, Clone)]
struct Moments {
    moment_1: DispatchTensor,
    moment_2: DispatchTensor,
    time: usize,
}

/// AdamW over a whole model: two parameter groups (with and without weight decay) and the
/// moments of every parameter updated so far.
#[derive(Debug, Clone)]
pub struct AdamWOptimizer {
    decay: AdamW,
    no_decay: AdamW,
    /// The parameters that get `no_decay` (by module path).
    no_decay_group: ParamGroup,
    moments: HashMap<ParamId, Moments>,
}

impl AdamWOptimizer {
    /// `decay` for every parameter but those `no_decay_group` matches, which get `decay` without
    /// weight decay.
    pub fn new(decay: AdamW, no_decay_group: ParamGroup) -> Self {
        let no_decay = AdamW {
            weight_decay: 0.0,
            ..decay.clone()
        };
        Self {
            decay,
            no_decay,
            no_decay_group,
            moments: HashMap::new(),
        }
    }

    /// One AdamW step at learning rate `lr` of every parameter of `model` that has a gradient in
    /// `grads`, each gradient multiplied by `factor` (`[1]`, on the gradients' device: unscaling
    /// and clipping, `optim::grad_factor`) inside the update.
    pub fn step<M: Module>(
        &mut self,
        lr: LearningRate,
        model: M,
        mut grads: GradientsParams,
        factor: Tensor<1>,
    ) -> M {
        let mut take = Take {
            optimizer: self,
            lr,
            grads: &mut grads,
            path: Vec::new(),
            taken: Vec::new(),
        };
        let model = model.map(&mut take);
        let taken = take.taken;
        if taken.is_empty() {
            return model;
        }
        let mut restores = Vec::with_capacity(taken.len());
        let mut updates = Vec::with_capacity(taken.len());
        for t in taken {
            restores.push((t.id, t.time, t.restore));
            updates.push(t.update);
        }
        let mut put = Put {
            new: HashMap::with_capacity(restores.len()),
        };
        for ((id, time, restore), [param, moment_1, moment_2]) in
            restores.into_iter().zip(adamw_updates(updates, factor))
        {
            let moments = Moments {
                moment_1,
                moment_2,
                time,
            };
            self.moments.insert(id, moments);
            put.new.insert(id, (param, restore));
        }
        model.map(&mut put)
    }

    /// Writes the moments of `model`'s parameters as burn's optimizer record (what
    /// `ModuleOptimizer::save` of burn's AdamW with BERT's groups writes).
    pub fn save<M: Module>(&self, model: &M, path: &Path) -> anyhow::Result<()> {
        let queue = Arc::new(Mutex::new(VecDeque::new()));
        // In the order `ModuleOptimizer` visits the parameters: the module's.
        let mut order = Ids::default();
        model.visit(&mut order);
        for id in &order.0 {
            queue
                .lock()
                .unwrap()
                .push_back(self.moments.get(id).cloned());
        }
        let mut record = bridged(&self.no_decay_group, Bridge::Give(queue));
        record.step(0.0, model.clone(), order.placeholders(model));
        record
            .save(path)
            .map_err(|e| anyhow::anyhow!("writing {}: {e:?}", path.display()))
    }

    /// Reads the moments of `model`'s parameters from burn's optimizer record at `path` (see
    /// [`AdamWOptimizer::save`]), replacing those held.
    pub fn load<M: Module>(mut self, model: &M, path: &Path) -> anyhow::Result<Self> {
        let queue = Arc::new(Mutex::new(VecDeque::new()));
        let mut record = bridged(&self.no_decay_group, Bridge::Take(queue.clone()))
            .load(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e:?}", path.display()))?;
        let mut order = Ids::default();
        model.visit(&mut order);
        record.step(0.0, model.clone(), order.placeholders(model));
        let taken = std::mem::take(&mut *queue.lock().unwrap());
        self.moments = order
            .0
            .into_iter()
            .zip(taken)
            .filter_map(|(id, m)| Some((id, m?)))
            .collect();
        Ok(self)
    }
}

/// How a parameter taken out by [`Take`] goes back in: its mapper and autodiff settings
/// (`ModuleOptimizer`'s `ParameterContext`), typed by the parameter's rank.
struct Restore<const D: usize> {
    mapper: ParamMapper<Tensor<D>>,
    require_grad: bool,
    checkpointing: Option<GradientCheckpointingStrategy>,
}

struct Taken {
    id: ParamId,
    time: usize,
    update: Update,
    restore: Box<dyn Any>,
}

/// Takes every parameter that has a gradient out of the model, with its gradient and moments.
struct Take<'a> {
    optimizer: &'a mut AdamWOptimizer,
    lr: LearningRate,
    grads: &'a mut GradientsParams,
    path: Vec<String>,
    taken: Vec<Taken>,
}

impl ModuleMapper for Take<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(grad) = self.grads.remove::<D>(param.id) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let path = self.path.join(".");
        let o = &mut *self.optimizer;
        let (moment_1, moment_2, time) = match o.moments.remove(&id) {
            Some(m) => (m.moment_1, m.moment_2, m.time + 1),
            None => (
                grad.zeros_like().into_dispatch(),
                grad.zeros_like().into_dispatch(),
                1,
            ),
        };
        let adamw = if o.no_decay_group.matches(&id, Some(&path)) {
            &o.no_decay
        } else {
            &o.decay
        };
        let c = AdamWCoefficients::new(adamw, self.lr, time);
        let restore = Restore::<D> {
            mapper,
            require_grad: tensor.is_require_grad(),
            checkpointing: tensor.gradient_checkpointing_strategy(),
        };
        let (device, shape, require_grad) = (tensor.device(), tensor.shape(), restore.require_grad);
        self.taken.push(Taken {
            id,
            time,
            update: Update {
                param: tensor.inner().into_dispatch(),
                grad: grad.into_dispatch(),
                moment_1,
                moment_2,
                c,
            },
            restore: Box::new(restore),
        });
        // Replaced by `Put` before anything reads the model.
        let never = |_: &Device, _: bool| -> Tensor<D> {
            unreachable!("a parameter taken out by an optimizer step was read before it came back")
        };
        Param::uninitialized(id, never, device, require_grad, shape)
    }
}

/// Puts the updated parameters back in place of [`Take`]'s placeholders.
struct Put {
    new: HashMap<ParamId, (DispatchTensor, Box<dyn Any>)>,
}

impl ModuleMapper for Put {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some((new, restore)) = self.new.remove(&param.id) else {
            return param;
        };
        let id = param.id;
        let r = restore
            .downcast::<Restore<D>>()
            .expect("a parameter comes back with the rank it left with");
        let mut tensor = Tensor::<D>::from_inner(Tensor::from_dispatch(new));
        if let Some(strategy) = r.checkpointing {
            tensor = tensor.with_gradient_checkpointing_strategy(strategy);
        }
        if r.require_grad {
            tensor = tensor.require_grad();
        }
        Param::from_mapped_value(id, tensor, r.mapper)
    }
}

/// Every float parameter's id, in the module's order, once (a `ModuleOptimizer` step calls its
/// optimizer for a parameter met twice only the first time: its gradient is then taken).
#[derive(Default)]
struct Ids(Vec<ParamId>);

impl ModuleVisitor for Ids {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if !self.0.contains(&p.id) {
            self.0.push(p.id);
        }
    }
}

impl Ids {
    /// A "gradient" for every parameter of `model` (the parameter's own values), so that a
    /// `ModuleOptimizer` step calls its optimizer for each, in the module's order.
    fn placeholders<M: Module>(&self, model: &M) -> GradientsParams {
        struct Own(GradientsParams);
        impl ModuleVisitor for Own {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
                self.0.register(p.id, p.val().inner());
            }
        }
        let mut own = Own(GradientsParams::new());
        model.visit(&mut own);
        own.0
    }
}

/// A `ModuleOptimizer` of `bridge` with BERT's two groups, as burn's AdamW would be built: its
/// record names each state by parameter id and path, as burn's `AdamW` records do.
fn bridged(no_decay_group: &ParamGroup, bridge: Bridge) -> ModuleOptimizer {
    ModuleOptimizer::from(bridge.clone()).with_group(no_decay_group.clone(), bridge, None)
}

type Queue = Arc<Mutex<VecDeque<Option<Moments>>>>;

/// burn's per-parameter optimizer interface, used only to move moments in and out of a
/// `ModuleOptimizer` (whose record is the checkpoint's format); it leaves parameters as they are.
#[derive(Clone)]
enum Bridge {
    /// Gives each parameter, in call order, the next state of the queue (`None`: no state).
    Give(Queue),
    /// Takes each parameter's state, in call order, into the queue.
    Take(Queue),
}

impl Optimizer for Bridge {
    type State<const D: usize> = AdamWState<D>;

    fn step<const D: usize>(
        &self,
        _lr: LearningRate,
        tensor: Tensor<D>,
        _grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        match self {
            Bridge::Give(queue) => {
                let next = queue.lock().unwrap().pop_front().flatten();
                let state = next.map(|m| AdamWState {
                    momentum: AdaptiveMomentumState {
                        time: m.time,
                        moment_1: Tensor::from_dispatch(m.moment_1),
                        moment_2: Tensor::from_dispatch(m.moment_2),
                        max_moment_2: None,
                    },
                });
                (tensor, state)
            }
            Bridge::Take(queue) => {
                let moments = state.map(|s| Moments {
                    moment_1: s.momentum.moment_1.into_dispatch(),
                    moment_2: s.momentum.moment_2.into_dispatch(),
                    time: s.momentum.time,
                });
                queue.lock().unwrap().push_back(moments);
                (tensor, None)
            }
        }
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}
